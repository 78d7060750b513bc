/**
 * What a draining server says to work it will not take: shared by the HTTP
 * guard and the standalone WebSocket guard.
 *
 * @internal
 */

/** The body of every 503 the guards write. */
export const REFUSED_BODY = "service shutting down\n"

/** A whole HTTP/1.1 503 response, for sockets no `ServerResponse` owns (upgrades). */
export const REFUSAL_RESPONSE =
  "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain\r\n" +
  `Content-Length: ${REFUSED_BODY.length}\r\nRetry-After: 1\r\n\r\n${REFUSED_BODY}`

/** The reason sent with WebSocket close code 1001 unless the user gives one. */
export const DEFAULT_CLOSE_REASON = "server shutting down"

/** What a connection whose request head did not complete within the grace gets before its FIN. */
export const REQUEST_TIMEOUT_RESPONSE = "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
