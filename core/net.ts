/** Small networking helpers shared by the CLI's local stacks and the tests. */
import { createServer } from "node:net";

/** A free TCP port on `host` (bound to port 0 and closed again: the caller binds it a moment later). */
export function freePort(host = "127.0.0.1"): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}
