# Worker image: `latentmesh worker` with the native engine built for CUDA (sm_90) and CPU.
# Build from the repository root:  docker build -f docker/worker.Dockerfile -t latentmesh/worker .
ARG CUDA_VERSION=13.0.0
FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu24.04 AS build
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl cmake g++ make xz-utils \
 && curl -fsSL https://deb.nodesource.com/setup_20.x | bash - && apt-get install -y --no-install-recommends nodejs \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
RUN npx tsc -p tsconfig.json && LM_CUDA=ON LM_MARCH=x86-64-v3 node scripts/build-native.mjs && npm prune --omit=dev

FROM nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu24.04
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
 && curl -fsSL https://deb.nodesource.com/setup_20.x | bash - && apt-get install -y --no-install-recommends nodejs \
 && apt-get purge -y curl && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --create-home latentmesh
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY --from=build /src/bin ./bin
COPY --from=build /src/kernels/build/latentmesh_native.node ./kernels/build/latentmesh_native.node
USER 10001
ENTRYPOINT ["node", "/app/bin/latentmesh"]
CMD ["worker", "--backend", "cuda"]
