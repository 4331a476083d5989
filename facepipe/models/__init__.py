"""Model layer: ONNX Runtime sessions, model packs, SCRFD and ArcFace."""
