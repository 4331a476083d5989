"""Prometheus metrics. Every facepipe metric is defined here, once, with the
``facepipe_`` prefix, so dashboards and alerts have one list to match."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)

BUILD_INFO = Gauge("facepipe_build_info", "Build information.", ["service", "version"])
READY = Gauge("facepipe_ready", "1 when the service is ready to serve.", ["service"])

GRPC_REQUESTS = Counter("facepipe_grpc_requests_total", "gRPC calls handled.", ["service", "method", "code"])
GRPC_LATENCY = Histogram(
    "facepipe_grpc_request_seconds", "gRPC call latency.", ["service", "method"], buckets=LATENCY_BUCKETS
)

MODEL_PROVIDER = Gauge(
    "facepipe_model_provider_info",
    "ONNX Runtime execution provider in use per model (value 1).",
    ["service", "model", "provider"],
)
INFERENCE_LATENCY = Histogram(
    "facepipe_inference_seconds",
    "Model inference time per batch, per node ('local' for in-process).",
    ["service", "model", "node"],
    buckets=LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram(
    "facepipe_batch_size", "Items per inference batch.", ["service", "model"], buckets=BATCH_BUCKETS
)
BATCH_LIMIT = Gauge("facepipe_batch_limit", "Current max batch size after backoff.", ["service", "model"])
BACKOFFS = Counter(
    "facepipe_backoffs_total", "Batch-size halvings after provider errors.", ["service", "model"]
)
IMAGES = Counter(
    "facepipe_images_total", "Images handled, by outcome (ok or an error code).", ["service", "outcome"]
)
FACES = Counter(
    "facepipe_faces_total",
    "Faces seen by the detector, accepted or rejected with a reason.",
    ["service", "outcome", "reason"],
)
DETECT_RECHECKS = Counter(
    "facepipe_detect_rechecks_total",
    "Images detected again at the configured input size: at the adaptive size a face lay near a cut-off.",
    ["service"],
)
EMBEDDINGS = Counter("facepipe_embeddings_total", "Embeddings computed.", ["service", "model"])

# Pipeline (NATS JetStream stages).
MESSAGES = Counter(
    "facepipe_messages_total",
    "Stage messages by outcome: acked, retried or dead_lettered.",
    ["service", "stage", "outcome"],
)
DLQ = Counter(
    "facepipe_dlq_total", "Messages sent to the dead-letter stream.", ["service", "stage", "reason"]
)
STAGE_LATENCY = Histogram(
    "facepipe_stage_seconds",
    "Time to handle one stage message.",
    ["service", "stage"],
    buckets=LATENCY_BUCKETS,
)
CONSUMER_PENDING = Gauge(
    "facepipe_consumer_pending", "Messages waiting in a stage's consumer (lag).", ["service", "stage"]
)
CONSUMER_ACK_PENDING = Gauge(
    "facepipe_consumer_ack_pending", "Messages delivered but not yet acked.", ["service", "stage"]
)
ORPHANS = Counter(
    "facepipe_orphans_total",
    "Stage messages left in the work queue that the consumer would never deliver again, "
    "by action: redelivered or dead_lettered.",
    ["service", "stage", "action"],
)
PIPELINE_FACES = Counter(
    "facepipe_pipeline_faces_total",
    "Faces through the pipeline by outcome: indexed, rejected, dup_skipped, optout_skipped.",
    ["service", "outcome"],
)
AUDIT_RECORDS = Counter(
    "facepipe_audit_records_total",
    "Audit records appended, by action and outcome (a gRPC status code name).",
    ["service", "action", "outcome"],
)
AUDIT_FAILURES = Counter(
    "facepipe_audit_failures_total",
    "Audit records that could not be appended to the audit stream (logged instead).",
    ["service"],
)
DEDUP = Counter(
    "facepipe_dedup_total",
    "Dedup lookups: kind exact or near, result hit or miss.",
    ["service", "kind", "result"],
)

# Crawler.
CRAWL_PAGES = Counter(
    "facepipe_crawler_pages_total",
    "Pages fetched, by how (static or render) and outcome.",
    ["service", "mode", "outcome"],
)
CRAWL_CANDIDATES = Counter(
    "facepipe_crawler_candidates_total", "Image candidates found and published.", ["service", "source"]
)
CRAWL_ROBOTS_SKIPPED = Counter(
    "facepipe_crawler_robots_skipped_total", "URLs skipped because robots.txt disallows them.", ["service"]
)
CRAWL_ERRORS = Counter("facepipe_crawler_errors_total", "Crawl errors by kind.", ["service", "kind"])
CRAWL_FETCH_LATENCY = Histogram(
    "facepipe_crawler_fetch_seconds",
    "Page fetch or render time.",
    ["service", "mode"],
    buckets=LATENCY_BUCKETS,
)
CRAWL_JOBS = Gauge("facepipe_crawler_jobs_running", "Crawl jobs running in this replica.", ["service"])

# Recognizer camera streams.
RECOGNIZE_FRAMES_DROPPED = Counter(
    "facepipe_recognize_frames_dropped_total",
    "Stream frames dropped unprocessed because a newer frame of the same stream had arrived.",
    ["service"],
)
RECOGNIZE_FRAMES = Counter(
    "facepipe_recognize_frames_total",
    "Stream frames processed, by outcome (ok or an error code).",
    ["service", "outcome"],
)
RECOGNIZE_FRAME_LATENCY = Histogram(
    "facepipe_recognize_frame_seconds",
    "Time from a stream frame's arrival to its result.",
    ["service"],
    buckets=LATENCY_BUCKETS,
)
RECOGNIZE_STREAMS = Gauge("facepipe_recognize_streams", "Camera streams open in this replica.", ["service"])
ACCESS_RECORDS = Counter(
    "facepipe_access_records_total",
    "Access-log records written (outcome ok) or lost (outcome failed), per decision (subject or unknown).",
    ["service", "decision", "outcome"],
)
