# Control-plane image: `latentmesh operator` and `latentmesh router` (no native engine needed).
# Build from the repository root:  docker build -f docker/control-plane.Dockerfile -t latentmesh/control-plane .
FROM node:20-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY bin ./bin
COPY cli ./cli
COPY core ./core
COPY contracts ./contracts
COPY operator ./operator
COPY router ./router
COPY worker ./worker
COPY scripts ./scripts
RUN npx tsc -p tsconfig.json && npm prune --omit=dev

FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY --from=build /src/bin ./bin
USER node
ENTRYPOINT ["node", "/app/bin/latentmesh"]
CMD ["router"]
