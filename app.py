"""translandseg web app (Hugging Face Spaces entry point): see ``translandseg.app.webapp``.

    python app.py --host 127.0.0.1 --port 7860 --db labels.db
"""

from translandseg.app.webapp import main

if __name__ == "__main__":
    main()
