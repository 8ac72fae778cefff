"""The ways in: the command line, the Gradio chat and the OpenAI-compatible HTTP API."""
