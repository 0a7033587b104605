"""What comes in: audience files, events, campaigns, user files."""
