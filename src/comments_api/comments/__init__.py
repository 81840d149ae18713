"""Comments: the rules, the service that owns creating/editing/listing, and the views."""
