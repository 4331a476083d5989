"""Recognition against enrolled subjects: the subject gallery, tracking and the access log."""
