/**
 * Where a worker finds its checkpoint (pure): the volumes, mounts and the download init container
 * that a model source needs. hf:// and s3:// are downloaded once into the model cache (a shared PVC,
 * a per-pod PVC, or an emptyDir); pvc:// is mounted read-only; an absolute path is used as is.
 */
import type { V1Container, V1EnvVar, V1PersistentVolumeClaim, V1Volume, V1VolumeMount } from "@kubernetes/client-node";
import { PATHS } from "../../contracts/model-deployment-wiring.js";
import type { ValidDeployment } from "./meta.js";

/** Images of the download step; both are public upstream images. */
export const FETCH_IMAGES = {
  hf: "docker.io/library/python:3.12-slim",
  s3: "docker.io/amazon/aws-cli:2.17.0",
} as const;

export const CACHE_VOLUME = "model-cache";
const SOURCE_VOLUME = "model-source";
const SOURCE_MOUNT = "/var/lib/latentmesh/source";

export interface ModelSourcePlan {
  readonly scheme: "hf" | "s3" | "pvc" | "path";
  /** Checkpoint directory the worker loads (LATENTMESH_MODEL). */
  readonly modelPath: string;
  /** The download step, when the source needs one. */
  readonly init: V1Container | undefined;
  readonly volumes: V1Volume[];
  readonly mounts: V1VolumeMount[];
  /** Per-pod cache PVCs (StatefulSet volumeClaimTemplates). */
  readonly claimTemplates: V1PersistentVolumeClaim[];
}

function cacheDirName(uri: string, revision: string | undefined): string {
  const base = uri.replace(/^[a-z0-9]+:\/\//, "").replace(/[^A-Za-z0-9._-]+/g, "--");
  return revision ? `${base}@${revision.replace(/[^A-Za-z0-9._-]+/g, "-")}` : base;
}

function credentialEnv(md: ValidDeployment, scheme: "hf" | "s3"): V1EnvVar[] {
  const ref = md.spec.model.source.credentialsSecretRef;
  if (!ref) return [];
  const fromKey = (env: string, key: string): V1EnvVar => ({ name: env, valueFrom: { secretKeyRef: { name: ref.name, key, optional: false } } });
  if (scheme === "hf") return [fromKey("HF_TOKEN", ref.key ?? "HF_TOKEN")];
  return [fromKey("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"), fromKey("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY")];
}

/**
 * A shell step that downloads once: a `.complete` marker makes restarts and shared caches cheap.
 * Inputs come as environment variables (SOURCE, REVISION, DEST), never spliced into the script.
 */
const FETCH_SCRIPTS = {
  hf:
    'pip install --user --quiet --no-cache-dir "huggingface_hub>=0.34" && ' +
    'python -c "import os; from huggingface_hub import snapshot_download as d; p = os.environ.get(\'PATTERNS\'); ' +
    "d(repo_id=os.environ['SOURCE'], revision=os.environ.get('REVISION') or None, local_dir=os.environ['DEST'], allow_patterns=p.split(',') if p else None)\"",
  s3: 'aws s3 sync "$SOURCE" "$DEST" --only-show-errors $S3_FILTERS',
} as const;

/** Files the router needs: tokenizer, its config and chat template (no weights). */
const TOKENIZER_PATTERNS = ["*.json", "tokenizer*", "*.jinja"] as const;

function fetchScript(scheme: "hf" | "s3"): string {
  return `set -euf; if [ -f "$DEST/.complete" ]; then echo "model cached"; exit 0; fi; mkdir -p "$DEST"; ${FETCH_SCRIPTS[scheme]}; touch "$DEST/.complete"`;
}

/** What a pod needs of the checkpoint: all of it (workers) or its tokenizer files (router). */
export type ModelPart = "checkpoint" | "tokenizer";

export function planModelSource(md: ValidDeployment, part: ModelPart = "checkpoint"): ModelSourcePlan {
  const { uri, revision } = md.spec.model.source;
  // the router's few tokenizer files always go to an emptyDir
  const cache = part === "checkpoint" ? md.spec.model.cache : undefined;
  const cacheVolumes: V1Volume[] = [];
  const claimTemplates: V1PersistentVolumeClaim[] = [];
  if (cache?.claimName) cacheVolumes.push({ name: CACHE_VOLUME, persistentVolumeClaim: { claimName: cache.claimName } });
  else if (cache?.size !== undefined) {
    claimTemplates.push({
      metadata: { name: CACHE_VOLUME },
      spec: {
        accessModes: ["ReadWriteOnce"],
        resources: { requests: { storage: String(cache.size) } },
        ...(cache.storageClassName ? { storageClassName: cache.storageClassName } : {}),
      },
    });
  } else cacheVolumes.push({ name: CACHE_VOLUME, emptyDir: {} });
  const cacheMount: V1VolumeMount = { name: CACHE_VOLUME, mountPath: PATHS.modelCache };

  if (uri.startsWith("pvc://")) {
    const [claim = "", ...rest] = uri.slice("pvc://".length).split("/");
    return {
      scheme: "pvc",
      modelPath: [SOURCE_MOUNT, ...rest.filter(Boolean)].join("/"),
      init: undefined,
      volumes: [{ name: SOURCE_VOLUME, persistentVolumeClaim: { claimName: claim, readOnly: true } }],
      mounts: [{ name: SOURCE_VOLUME, mountPath: SOURCE_MOUNT, readOnly: true }],
      claimTemplates: [],
    };
  }
  if (uri.startsWith("/")) return { scheme: "path", modelPath: uri, init: undefined, volumes: [], mounts: [], claimTemplates: [] };

  const scheme = uri.startsWith("hf://") ? "hf" : "s3";
  const dest = `${PATHS.modelCache}/${cacheDirName(uri, revision)}${part === "tokenizer" ? ".tokenizer" : ""}`;
  const filters: V1EnvVar[] =
    part === "checkpoint"
      ? []
      : scheme === "hf"
        ? [{ name: "PATTERNS", value: TOKENIZER_PATTERNS.join(",") }]
        : [{ name: "S3_FILTERS", value: `--exclude * ${TOKENIZER_PATTERNS.map((p) => `--include ${p}`).join(" ")}` }];
  const init: V1Container = {
    name: "fetch-model",
    image: FETCH_IMAGES[scheme],
    command: ["/bin/sh", "-c", fetchScript(scheme)],
    env: [
      { name: "SOURCE", value: scheme === "hf" ? uri.slice("hf://".length) : uri },
      { name: "REVISION", value: revision ?? "" },
      { name: "DEST", value: dest },
      { name: "HOME", value: "/tmp" },
      ...filters,
      ...credentialEnv(md, scheme),
    ],
    volumeMounts: [cacheMount],
    securityContext: { allowPrivilegeEscalation: false, runAsNonRoot: true, runAsUser: 65532 },
  };
  return { scheme, modelPath: dest, init, volumes: cacheVolumes, mounts: [cacheMount], claimTemplates };
}
