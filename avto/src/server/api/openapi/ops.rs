//! What the document says about each operation, by the operation name its route was recorded
//! with ([`super::super::ServedRoute::operation`]).

/// Who may call an operation.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Auth {
    Nobody,
    Client,
    Operator,
    ClientOrOperator,
}

/// The body an operation reads.
#[derive(Clone, Copy)]
pub(super) enum Body {
    None,
    /// A JSON object of this component schema.
    Json(&'static str),
    /// Bytes, streamed.
    Octets,
}

/// The success answer of an operation.
#[derive(Clone, Copy)]
pub(super) enum Answer {
    /// JSON of this component schema.
    Json(u16, &'static str),
    /// Text of this content type.
    Text(&'static str),
    /// 302 with a `Location`.
    Redirect,
}

/// What the document says about one operation.
pub(super) struct Op {
    pub(super) summary: &'static str,
    pub(super) tag: &'static str,
    pub(super) auth: Auth,
    pub(super) query: &'static [(&'static str, &'static str, &'static str)],
    pub(super) body: Body,
    pub(super) answer: Answer,
    /// Error statuses beside 401/403 of the credentials (added from `auth`) and 429.
    pub(super) errors: &'static [u16],
}

const LIST_QUERY: &[(&str, &str, &str)] = &[
    ("limit", "Count", "At most this many jobs (default 100; more than 1000 are cut to 1000)."),
    ("offset", "Count", "Skip this many (default 0)."),
    ("detailed", "Flag", "Full job documents (default: `DETAILED_API_RESPONSES`)."),
];
const STATUS_QUERY: &[(&str, &str, &str)] = &[
    ("fields", "Fields", "Only these members (comma-separated; `id` is always there)."),
    ("detailed", "Flag", "Full job document (default: `DETAILED_API_RESPONSES`)."),
];

pub(super) fn op(operation: &str) -> Option<Op> {
    use Answer::*;
    use Auth::*;
    let json_body = Body::Json;
    Some(match operation {
        "create_job" => Op {
            summary: "Create a job of this blueprint",
            tag: "jobs",
            auth: Client,
            query: &[],
            body: Body::None, // set per blueprint
            answer: Json(202, "JobAccepted"),
            errors: &[400, 408, 413, 503],
        },
        "list_jobs" => Op {
            summary: "The caller's jobs, newest first",
            tag: "jobs",
            auth: Client,
            query: LIST_QUERY,
            body: Body::None,
            answer: Json(200, "JobList"),
            errors: &[400, 503],
        },
        "job_status" => Op {
            summary: "A job's status (`result` once it is terminal)",
            tag: "jobs",
            auth: Client,
            query: STATUS_QUERY,
            body: Body::None,
            answer: Json(200, "Job"),
            errors: &[400, 404, 503],
        },
        "unknown_endpoint" => Op {
            summary: "No blueprint has this create endpoint: always 404, naming those that exist",
            tag: "jobs",
            auth: Client,
            query: &[],
            body: Body::None,
            answer: Json(404, "Error"),
            errors: &[400],
        },
        "cancel_job" => Op {
            summary: "Cancel a job (the worker running its task is told)",
            tag: "jobs",
            auth: Client,
            query: &[],
            body: Body::None,
            answer: Json(200, "JobCancelled"),
            errors: &[400, 404, 409, 503],
        },
        "job_history" => Op {
            summary: "A job's history rows, oldest first (404 when history is disabled)",
            tag: "jobs",
            auth: Client,
            query: &[("detailed", "Flag", "Full job snapshots (default: `DETAILED_API_RESPONSES`).")],
            body: Body::None,
            answer: Json(200, "HistoryRows"),
            errors: &[400, 404, 503],
        },
        "approve_job" | "approval_webhook" => Op {
            summary: "The human decision a job waits for (`{\"decision\": \"approved\"}`)",
            tag: "jobs",
            auth: Client,
            query: &[],
            body: json_body("Decision"),
            answer: Json(200, "ApprovalReceived"),
            errors: &[400, 404, 408, 409, 413, 503],
        },
        "quarantined_jobs" => Op {
            summary: "The caller's quarantined jobs, most recently quarantined first",
            tag: "jobs",
            auth: Client,
            query: LIST_QUERY,
            body: Body::None,
            answer: Json(200, "JobList"),
            errors: &[400, 503],
        },
        "list_blueprints" => Op {
            summary: "The blueprints, with their create endpoints and input contracts",
            tag: "blueprints",
            auth: Client,
            query: &[],
            body: Body::None,
            answer: Json(200, "BlueprintList"),
            errors: &[],
        },
        "blueprint_graph" => Op {
            summary: "A blueprint's state machine as Graphviz DOT",
            tag: "blueprints",
            auth: Client,
            query: &[],
            body: Body::None,
            answer: Text("text/vnd.graphviz; charset=utf-8"),
            errors: &[400, 404],
        },
        "list_workers" => Op {
            summary: "Live workers: a summary for clients, whole registrations for the operator",
            tag: "workers",
            auth: ClientOrOperator,
            query: &[],
            body: Body::None,
            answer: Json(200, "WorkerList"),
            errors: &[400, 503],
        },
        "worker_catalog" => Op {
            summary: "The skills live workers offer, with their contracts",
            tag: "workers",
            auth: Client,
            query: &[],
            body: Body::None,
            answer: Json(200, "Catalog"),
            errors: &[],
        },
        "dashboard" => Op {
            summary: "The caller's job counts per status, queue depth, live workers",
            tag: "jobs",
            auth: Client,
            query: &[],
            body: Body::None,
            answer: Json(200, "Dashboard"),
            errors: &[503],
        },
        "reload_workers" => Op {
            summary: "Read workers.toml (`WORKERS_CONFIG_PATH`) again",
            tag: "operator",
            auth: Operator,
            query: &[],
            body: Body::None,
            answer: Json(200, "WorkersReloaded"),
            errors: &[400, 409, 503],
        },
        "presigned_upload" => Op {
            summary: "A presigned PUT URL for `jobs/{job_id}/{filename}` (S3; 501 without)",
            tag: "files",
            auth: Client,
            query: &[
                ("filename", "FileName", "The file's name under the job (required)."),
                ("expires_in", "ExpiresIn", "Validity in seconds (default 3600, at most 7 days)."),
            ],
            body: Body::None,
            answer: Json(200, "PresignedUpload"),
            errors: &[400, 404, 501, 503],
        },
        "upload_content" => Op {
            summary: "The body streamed to `jobs/{job_id}/{filename}` (S3; 501 without)",
            tag: "files",
            auth: Client,
            query: &[],
            body: Body::Octets,
            answer: Json(200, "Uploaded"),
            errors: &[400, 404, 408, 413, 500, 501, 503],
        },
        "download_file" => Op {
            summary: "302 to a presigned GET URL of `jobs/{job_id}/{filename}`, valid for 60 s (S3; 501 without)",
            tag: "files",
            auth: Client,
            query: &[],
            body: Body::None,
            answer: Redirect,
            errors: &[400, 404, 500, 501, 503],
        },
        "status" => Op {
            summary: "Health: 503 when a background task stays down",
            tag: "public",
            auth: Nobody,
            query: &[],
            body: Body::None,
            answer: Json(200, "Health"),
            errors: &[],
        },
        "openapi" => Op {
            summary: "This document",
            tag: "public",
            auth: Nobody,
            query: &[],
            body: Body::None,
            answer: Json(200, "OpenApiDocument"),
            errors: &[],
        },
        "docs" => Op {
            summary: "This document as an HTML page (Swagger UI, bundled in the binary)",
            tag: "public",
            auth: Nobody,
            query: &[],
            body: Body::None,
            answer: Text("text/html; charset=utf-8"),
            errors: &[],
        },
        "docs_css" => Op {
            summary: "The style sheet of the HTML page",
            tag: "public",
            auth: Nobody,
            query: &[],
            body: Body::None,
            answer: Text("text/css; charset=utf-8"),
            errors: &[],
        },
        "docs_js" => Op {
            summary: "The script of the HTML page",
            tag: "public",
            auth: Nobody,
            query: &[],
            body: Body::None,
            answer: Text("text/javascript; charset=utf-8"),
            errors: &[],
        },
        "metrics" => Op {
            summary: "Prometheus metrics",
            tag: "operator",
            auth: Operator,
            query: &[],
            body: Body::None,
            answer: Text("text/plain; version=0.0.4; charset=utf-8"),
            errors: &[],
        },
        _ => return None,
    })
}
