"""Model layer: ONNX Runtime sessions, model packs and their conversion, and one class per
model family (YuNet and SCRFD detectors, SFace and ArcFace recognizers)."""
