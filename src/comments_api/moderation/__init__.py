"""Moderation: statuses, bans and abuse rules, the moderation service and its views."""
