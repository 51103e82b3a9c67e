/**
 * Every metric name, help text and label set, defined once (DESIGN.md §7). Router names mirror
 * NVIDIA Dynamo's frontend; worker names follow vLLM's engine metrics; operator names follow
 * controller-runtime. Components register these with prom-client; dashboards read the same names.
 */

/** Labels kept consistent across components. */
export const LABELS = ["model", "namespace", "deployment", "group", "rank", "worker_id"] as const;

export interface MetricDef {
  readonly name: string;
  readonly help: string;
  readonly type: "counter" | "gauge" | "histogram";
  readonly labels: readonly string[];
  /** Histogram buckets, in the metric's unit. */
  readonly buckets?: readonly number[];
}

const LATENCY_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60] as const;
const ITL_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28] as const;
const TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144] as const;

function def(name: string, type: MetricDef["type"], help: string, labels: readonly string[] = [], buckets?: readonly number[]): MetricDef {
  return buckets ? { name, type, help, labels, buckets } : { name, type, help, labels };
}

export const ROUTER_METRICS = {
  requestsTotal: def("latentmesh_router_requests_total", "counter", "Requests finished, by model and status", ["model", "status"]),
  inflightRequests: def("latentmesh_router_inflight_requests", "gauge", "Requests being served now", ["model"]),
  queuedRequests: def("latentmesh_router_queued_requests", "gauge", "Requests accepted but not yet placed on a rank", ["model"]),
  timeToFirstToken: def("latentmesh_router_time_to_first_token_seconds", "histogram", "Time from request arrival to the first token", ["model"], LATENCY_BUCKETS),
  interTokenLatency: def("latentmesh_router_inter_token_latency_seconds", "histogram", "Time between consecutive output tokens", ["model"], ITL_BUCKETS),
  requestDuration: def("latentmesh_router_request_duration_seconds", "histogram", "Time from request arrival to its last byte", ["model"], LATENCY_BUCKETS),
  inputSequenceTokens: def("latentmesh_router_input_sequence_tokens", "histogram", "Prompt length in tokens", ["model"], TOKEN_BUCKETS),
  outputSequenceTokens: def("latentmesh_router_output_sequence_tokens", "histogram", "Generated length in tokens", ["model"], TOKEN_BUCKETS),
  outputTokensTotal: def("latentmesh_router_output_tokens_total", "counter", "Tokens generated", ["model"]),
  rejectedRequestsTotal: def("latentmesh_router_rejected_requests_total", "counter", "Requests refused, by reason", ["model", "reason"]),
  migrationsTotal: def("latentmesh_router_migrations_total", "counter", "Requests moved to another rank", ["model", "migration_type"]),
  routingOverhead: def("latentmesh_router_routing_overhead_seconds", "histogram", "Time spent choosing a rank", ["model"], [0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005]),
  specAcceptanceLength: def("latentmesh_router_spec_acceptance_length", "gauge", "Mean tokens accepted per step as reported by each rank", ["model", "worker_id"]),
} as const;

export const WORKER_METRICS = {
  numRequestsRunning: def("latentmesh_worker_num_requests_running", "gauge", "Sequences in the running batch", ["model", "worker_id"]),
  numRequestsWaiting: def("latentmesh_worker_num_requests_waiting", "gauge", "Sequences waiting for a slot", ["model", "worker_id"]),
  kvCacheUsagePerc: def("latentmesh_worker_kv_cache_usage_perc", "gauge", "Fraction of KV-cache blocks in use (0-1)", ["model", "worker_id"]),
  stateSlotsUsagePerc: def("latentmesh_worker_state_slots_usage_perc", "gauge", "Fraction of Mamba state slots in use (0-1)", ["model", "worker_id"]),
  promptTokensTotal: def("latentmesh_worker_prompt_tokens_total", "counter", "Prompt tokens processed", ["model", "worker_id"]),
  generationTokensTotal: def("latentmesh_worker_generation_tokens_total", "counter", "Tokens generated", ["model", "worker_id"]),
  timeToFirstToken: def("latentmesh_worker_time_to_first_token_seconds", "histogram", "Time from arrival at the rank to the first token", ["model", "worker_id"], LATENCY_BUCKETS),
  interTokenLatency: def("latentmesh_worker_inter_token_latency_seconds", "histogram", "Time between consecutive tokens of a sequence", ["model", "worker_id"], ITL_BUCKETS),
  specDecodeNumDrafts: def("latentmesh_worker_spec_decode_num_drafts_total", "counter", "Speculative drafts proposed", ["model", "worker_id"]),
  specDecodeNumDraftTokens: def("latentmesh_worker_spec_decode_num_draft_tokens_total", "counter", "Draft tokens proposed", ["model", "worker_id"]),
  specDecodeNumAcceptedTokens: def("latentmesh_worker_spec_decode_num_accepted_tokens_total", "counter", "Draft tokens accepted", ["model", "worker_id"]),
  specDecodeNumAcceptedTokensPerPos: def("latentmesh_worker_spec_decode_num_accepted_tokens_per_pos_total", "counter", "Draft tokens accepted, by draft position", ["model", "worker_id", "position"]),
  expertTokensTotal: def("latentmesh_worker_expert_tokens_total", "counter", "Tokens routed to each expert", ["model", "worker_id", "layer", "expert"]),
} as const;

export const OPERATOR_METRICS = {
  reconcileTotal: def("controller_runtime_reconcile_total", "counter", "Reconciliations, by controller and result", ["controller", "result"]),
  reconcileTime: def("controller_runtime_reconcile_time_seconds", "histogram", "Time per reconciliation", ["controller"], [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]),
  workqueueDepth: def("workqueue_depth", "gauge", "Current depth of the work queue", ["name"]),
  workqueueAdds: def("workqueue_adds_total", "counter", "Items added to the work queue", ["name"]),
  workqueueRetries: def("workqueue_retries_total", "counter", "Retries handled by the work queue", ["name"]),
  workqueueQueueDuration: def("workqueue_queue_duration_seconds", "histogram", "Time an item waits in the queue", ["name"], [0.001, 0.01, 0.1, 1, 10]),
} as const;
