"""Image sessions: an image encoded once by one model and held, by id, for prompts."""
