"""Thin shared package: caption metrics, checkpoint IO, distributed launch, input errors."""
