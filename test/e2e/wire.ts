/**
 * A raw HTTP/1.1 client over one TCP socket: it sees exactly what the server
 * puts on the wire (headers, FIN, RST), which agents hide.
 */
import * as Net from "node:net"
import * as Tls from "node:tls"

export interface RawResponse {
  readonly status: number
  readonly headers: Readonly<Record<string, string>>
  readonly body: string
}

export interface Closed {
  /** The connection ended with a reset (ECONNRESET / EPIPE), not a FIN. */
  readonly reset: boolean
  readonly error: string | undefined
  readonly at: number
}

// tls.connect passes allowHalfOpen on to its TLSSocket; its types omit it.
const tlsOptions = (options: Tls.ConnectionOptions & { readonly allowHalfOpen: boolean }): Tls.ConnectionOptions =>
  options

export class RawConnection {
  private buffer = Buffer.alloc(0)
  private waiting: (() => void) | undefined
  private ended = false
  readonly closed: Promise<Closed>

  readonly socket: Net.Socket

  private constructor(socket: Net.Socket) {
    this.socket = socket
    let error: NodeJS.ErrnoException | undefined
    socket.on("data", (chunk) => {
      this.buffer = Buffer.concat([this.buffer, chunk])
      this.waiting?.()
    })
    socket.on("end", () => {
      this.ended = true
      this.waiting?.()
    })
    socket.on("error", (e) => {
      error = e
    })
    this.closed = new Promise((resolve) => {
      socket.on("close", () => {
        this.ended = true
        this.waiting?.()
        resolve({
          reset: error !== undefined && ["ECONNRESET", "EPIPE"].includes(error.code ?? ""),
          error: error?.code,
          at: Date.now()
        })
      })
    })
  }

  /**
   * `halfOpen`: the client does not close its side when the server ends the
   * connection (as a client busy elsewhere would not), so the server must.
   */
  static open(
    port: number,
    options: { readonly tls?: boolean; readonly halfOpen?: boolean } = {}
  ): Promise<RawConnection> {
    return new Promise((resolve, reject) => {
      const allowHalfOpen = options.halfOpen === true
      const socket = options.tls === true
        ? Tls.connect(tlsOptions({ port, host: "127.0.0.1", rejectUnauthorized: false, allowHalfOpen }))
        : Net.connect({ port, host: "127.0.0.1", allowHalfOpen })
      socket.once(options.tls === true ? "secureConnect" : "connect", () => resolve(new RawConnection(socket)))
      socket.once("error", reject)
    })
  }

  /** Writes raw bytes: part of a request, several pipelined requests. */
  write(text: string): void {
    this.socket.write(text)
  }

  /** Writes raw bytes and resolves once they are handed to the kernel (on the wire). */
  flush(text: string): Promise<void> {
    return new Promise((resolve, reject) => this.socket.write(text, (error) => (error ? reject(error) : resolve())))
  }

  send(path: string, headers: Record<string, string> = {}): void {
    let head = `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n`
    for (const [name, value] of Object.entries(headers)) head += `${name}: ${value}\r\n`
    this.socket.write(head + "\r\n")
  }

  async request(path: string, headers?: Record<string, string>): Promise<RawResponse> {
    this.send(path, headers)
    return this.read()
  }

  private async more(): Promise<void> {
    if (this.ended) throw new Error(`connection closed; unparsed: ${JSON.stringify(this.buffer.toString())}`)
    await new Promise<void>((resolve) => {
      this.waiting = () => {
        this.waiting = undefined
        resolve()
      }
    })
  }

  /** Reads one complete response (Content-Length or chunked). */
  async read(): Promise<RawResponse> {
    let headEnd: number
    while ((headEnd = this.buffer.indexOf("\r\n\r\n")) === -1) await this.more()
    const [statusLine, ...lines] = this.buffer.subarray(0, headEnd).toString("latin1").split("\r\n")
    const status = Number(statusLine!.split(" ")[1])
    const headers: Record<string, string> = {}
    for (const line of lines) {
      const colon = line.indexOf(":")
      headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim()
    }
    let rest = headEnd + 4
    let body = Buffer.alloc(0)
    if (headers["transfer-encoding"] === "chunked") {
      while (true) {
        let lineEnd: number
        while ((lineEnd = this.buffer.indexOf("\r\n", rest)) === -1) await this.more()
        const size = parseInt(this.buffer.subarray(rest, lineEnd).toString(), 16)
        while (this.buffer.length < lineEnd + 2 + size + 2) await this.more()
        body = Buffer.concat([body, this.buffer.subarray(lineEnd + 2, lineEnd + 2 + size)])
        rest = lineEnd + 2 + size + 2
        if (size === 0) break
      }
    } else {
      const length = Number(headers["content-length"] ?? "0")
      while (this.buffer.length < rest + length) await this.more()
      body = this.buffer.subarray(rest, rest + length)
      rest += length
    }
    this.buffer = this.buffer.subarray(rest)
    return { status, headers, body: body.toString() }
  }

  /** Whatever arrives until the connection closes. */
  async drain(): Promise<string> {
    while (!this.ended) await this.more()
    return this.buffer.toString()
  }

  destroy(): void {
    this.socket.destroy()
  }
}

/** Tries to open a connection; resolves with the error code if it is refused. */
export const connectError = (port: number): Promise<string | undefined> =>
  new Promise((resolve) => {
    const socket = Net.connect({ port, host: "127.0.0.1" })
    socket.once("connect", () => {
      socket.destroy()
      resolve(undefined)
    })
    socket.once("error", (e: NodeJS.ErrnoException) => resolve(e.code))
  })

/** Connects every 20 ms until the connection is refused; returns when (Date.now()), or fails after `timeoutMs`. */
export const untilRefused = async (port: number, timeoutMs: number): Promise<number> => {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await connectError(port) === "ECONNREFUSED") return Date.now()
    await sleep(20)
  }
  throw new Error(`port ${port} still accepted connections after ${timeoutMs} ms`)
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
