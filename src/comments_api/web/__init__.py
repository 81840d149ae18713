"""HTTP layer: Flask blueprints that translate HTTP to domain calls and back."""
