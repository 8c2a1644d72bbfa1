"""``attnvision push RUN_DIR REPO_ID``: a run's model, weights and model card onto the Hugging Face Hub."""
from __future__ import annotations

import sys

from ..loading import push_to_hub
from ..loading.hub import DEFAULT_COMMIT_MESSAGE


def add_parser(sub):
    p = sub.add_parser("push", help="upload a run's model (config.json, model.safetensors, model card) to the "
                       "Hugging Face Hub")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory of `attnvision train`")
    p.add_argument("repo_id", metavar="REPO_ID", help="the Hub repository, ORG/NAME (created if needed)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--commit-message", default=DEFAULT_COMMIT_MESSAGE)
    p.set_defaults(func=run)


def run(args) -> int:
    try:
        url = push_to_hub(args.run_dir, args.repo_id, private=args.private, commit_message=args.commit_message)
    except ImportError as e:  # the optional huggingface_hub: one line, as for every other missing piece
        print(f"attnvision push: error: {e}", file=sys.stderr)
        return 2
    print(f"pushed {args.run_dir} to https://huggingface.co/{args.repo_id} ({url})")
    return 0
