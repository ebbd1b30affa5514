"""The web demo: pick an image, ask a question, watch each reasoning step.

service.py answers a question about an image with the trained model; app.py is the FastAPI app
and uvicorn server around it; static/ holds the page (plain HTML, CSS and JavaScript).
"""
