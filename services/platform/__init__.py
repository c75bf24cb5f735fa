"""Process-level plumbing shared by every service: database access and migrations."""
