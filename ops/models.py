"""No models: this module only makes Django send ``post_migrate`` to the ops app (see apps.py)."""
