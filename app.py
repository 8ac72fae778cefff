"""Start the chat UI: python app.py  (then open http://127.0.0.1:7860)."""

from rag.serve.ui import launch

if __name__ == "__main__":
    launch()
