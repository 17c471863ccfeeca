"""What the pages draw with: tiles, the field view, cell marks, user text, the keys component."""
