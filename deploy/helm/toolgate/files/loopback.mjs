// Preload (`node --import ./loopback.mjs ...`): make every server that listens on a port without
// naming a host listen on 127.0.0.1 (or $HOST) instead of all interfaces. server-everything's
// streamableHttp transport calls `app.listen(PORT)`, which would bind 0.0.0.0/::.
import net from "node:net";

const host = process.env.HOST || "127.0.0.1";
const listen = net.Server.prototype.listen;

net.Server.prototype.listen = function (...args) {
  const [first] = args;
  const isPort =
    typeof first === "number" || (typeof first === "string" && /^\d+$/.test(first));
  if (isPort && typeof args[1] !== "string") {
    args.splice(1, 0, host);
  } else if (first && typeof first === "object" && !("path" in first) && !("host" in first)
             && !("fd" in first) && !("handle" in first) && !("_handle" in first)) {
    args[0] = { ...first, host };
  }
  return listen.apply(this, args);
};
