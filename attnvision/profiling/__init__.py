"""Parameter and multiply-add accounting."""
from .profile import Profile, profile

__all__ = ["Profile", "profile"]
