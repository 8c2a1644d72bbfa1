"""Where a network looks: Grad-CAM / Grad-CAM++, the attention layers' own maps, and scores.

```python
from attnvision import explain
cams = explain.gradcam(model, images)                  # (B, H, W), layer="auto": the last stage
maps = explain.attention_maps(model, images)           # {layer name: AttentionMap}
explain.energy_in_box(cams, boxes), explain.pointing_game(cams, boxes)
explain.explanation_scores(model, loader)              # over (image, label, box) samples
```
``explain_image(model, image)`` draws all of it in one labelled figure and ``save_figure`` writes
it; they need matplotlib (the ``plot`` extra), imported only when called.
"""
from .attention import LAYOUTS, AttentionMap, attention_layers, attention_maps, query_maps
from .gradcam import EXPLAIN_METHODS, METHODS, cam_from_activations, gradcam, resolve_layer
from .figure import explain_image, save_figure
from .metrics import energy_in_box, explanation_scores, pointing_game

__all__ = ["EXPLAIN_METHODS", "LAYOUTS", "METHODS", "AttentionMap", "attention_layers", "attention_maps",
           "cam_from_activations", "energy_in_box", "explain_image", "explanation_scores", "gradcam", "pointing_game",
           "query_maps", "resolve_layer", "save_figure"]
