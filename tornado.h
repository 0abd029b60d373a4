/* tornado.h - Tornado's async model (event loop, futures, coroutines,
 * executor, HTTP) for C, as one header.               MIT licence: see the end.
 *
 * ==========================================================================
 *  tornado.h: an event loop, futures, stackless coroutines, a thread pool,
 *  buffered TCP streams and an HTTP/1.1 server, in one C99 header.
 * ==========================================================================
 *
 * Python's Tornado made one model popular: one thread, one event loop,
 * futures and coroutines, so that thousands of mostly idle connections cost
 * almost nothing. This header brings that model to C for small tools,
 * daemons and firmware-like programs on Linux (epoll), or with
 * -DTN_BACKEND_POLL on any POSIX system with poll() (off Linux, and with
 * -DTN_POSIX_ONLY, only POSIX calls are used: no accept4, SOCK_NONBLOCK,
 * TIOCOUTQ or sendfile; make check-cross checks it). The suite runs on
 * x86-64, 32-bit ARM and big-endian s390x (make check-cross). On a 32-bit
 * system with a 32-bit time_t the Date header wraps in 2038: build with
 * -D_TIME_BITS=64 where the C library offers it.
 *
 * QUICK START ---------------------------------------------------------------
 * Copy tornado.h into your project. In exactly ONE .c file, include it first
 * with the implementation switched on; everywhere else include it plainly.
 *
 *     #define TORNADO_IMPLEMENTATION
 *     #include "tornado.h"
 *
 *     static void hello(tn_http_request *req, void *arg) {
 *         tn_http_respond(req, 200, "text/plain", "Hello, world!", 13);
 *     }
 *     int main(void) {
 *         tn_loop *loop;  tn_http_server *srv;
 *         tn_loop_new(&loop, NULL);
 *         tn_http_server_new(loop, NULL, &srv);
 *         tn_http_route(srv, "GET", "/", hello, NULL, NULL);
 *         tn_http_listen(srv, "127.0.0.1", 8888);
 *         tn_loop_run(loop);               // until tn_loop_stop()
 *     }
 *
 * Build: cc -O2 app.c -pthread   (add -DTN_NO_THREADS for no pthreads)
 *
 * CONCEPTS (Tornado name -> tornado.h) ---------------------------------------
 *   IOLoop                      tn_loop: tn_loop_new/run/stop/step/free
 *   IOLoop.add_handler          tn_add_handler / tn_update_handler / tn_remove_handler
 *   IOLoop.add_callback         tn_add_callback (FIFO, next iteration)
 *   add_callback from a thread  tn_add_callback_threadsafe (eventfd/self-pipe wake-up)
 *   IOLoop.call_later/call_at   tn_call_later / tn_call_at -> tn_timer handle
 *   IOLoop.remove_timeout       tn_cancel_timer
 *   PeriodicCallback            tn_call_every (skips missed runs)
 *   IOLoop.time                 tn_time_ms
 *   IOLoop.run_sync             tn_run_sync
 *   signal handling             tn_signal_add / tn_signal_remove
 *   Future                      tn_future: resolve/fail/cancel/on_done/release
 *   Future.add_done_callback    tn_future_on_done (one per future; runs later)
 *   gen.multi / gather          tn_all
 *   asyncio.wait(FIRST_COMPLETED) tn_any
 *   gen.with_timeout            tn_with_timeout
 *   gen.sleep                   tn_sleep
 *   @gen.coroutine / async def  a tn_co_fn with TN_BEGIN ... TN_END; tn_spawn
 *   await / yield               TN_AWAIT, TN_YIELD, TN_SLEEP, TN_WAIT_UNTIL
 *   run_in_executor             tn_run_in_executor (fixed pthread pool)
 *   tornado.locks.Event         tn_event
 *   tornado.queues.Queue        tn_queue (bounded: put waits when full)
 *   gather(return_exceptions)   tn_all_settled
 *   several awaiting one Future tn_shared (tn_shared_wait per consumer)
 *   IOLoop.add_handler + Future tn_wait_fd (await a driver's socket)
 *   cache.get / cache.set       tn_cache (tn_cache_fetch: single-flight)
 *   IOStream                    tn_stream: tn_stream_read_until/read_bytes/
 *                               read_until_close/write/close
 *   TCPClient.connect           tn_tcp_connect (names resolved on the executor)
 *   TCPServer                   tn_tcp_listen
 *   AsyncHTTPClient.fetch       tn_http_client_new + tn_http_fetch -> response
 *   HTTPClient (blocking)       tn_http_fetch_sync
 *   HTTPServer + Application    tn_http_server + tn_http_route / tn_http_route_co
 *   RequestHandler              a plain handler, or a coroutine handler
 *   stream_request_body         tn_http_route_opts.on_body
 *   RequestHandler.flush        tn_http_drain (a future: backpressure)
 *   on_connection_close         tn_http_closed; tn_http_route_opts.cancel_on_close
 *   request.remote_ip           tn_http_remote_ip
 *   get_argument(s)             tn_http_argument(s); get_query_argument(s),
 *                               get_body_argument(s): tn_http_query_argument(s),
 *                               tn_http_body_argument(s)
 *   request.protocol            tn_http_protocol ("http" or "https")
 *   request.files               tn_http_file_count / tn_http_file_at / tn_http_get_file
 *   get_cookie / set_cookie     tn_http_cookie / tn_http_set_cookie, tn_http_clear_cookie
 *   set_status / redirect       tn_http_set_status / tn_http_redirect
 *   set_header / add_header / clear_header  tn_http_set_header / _add_header / _clear_header
 *   send_error / write_error    tn_http_send_error / tn_http_server_opts.on_error
 *   compute_etag, 304           automatic for tn_http_respond (no_etag opts out)
 *   log_request                 tn_http_server_opts.on_access (+ tn_http_access_combined)
 *   json_encode (strings)       tn_json_escape
 *   HTTPServer(ssl_options=)    tn_tls_server_ctx_new + tn_http_listen_tls
 *   validate_cert / ca_certs    tn_tls_client_ctx_new (ca_file, insecure) in
 *                               tn_http_client_opts.tls
 *   IOStream.start_tls          tn_stream_start_tls
 *
 * THE LOOP -----------------------------------------------------------------
 * One iteration: run the callbacks queued before it began (FIFO), run the
 * timers due (earliest first; equal deadlines in the order scheduled),
 * re-check TN_WAIT_UNTIL conditions, then wait for I/O until the next timer
 * (not at all if callbacks are pending) and dispatch it. Everything runs on
 * the loop's thread; only tn_add_callback_threadsafe may be called from
 * another. There is no global state: every object hangs off its tn_loop
 * (the one exception is the poll backend's signal path, below).
 * Embedding in another main loop: call tn_loop_step(loop, 0) from it, and
 * sleep at most tn_loop_next_timeout(loop) ms, or poll tn_loop_fd(loop).
 *
 * Backends: epoll (Linux default) with eventfd wake-ups and signalfd
 * signals; -DTN_BACKEND_POLL selects poll(2) with a self-pipe and sigaction
 * (POSIX only). The signal path of the poll backend keeps the self-pipe's
 * fd in a static, as a signal handler cannot find a loop otherwise; only
 * one loop per process can then own signals (others get TN_EEXIST).
 * Level-triggered: a callback may remove or close any fd, its own included;
 * an event collected for an fd that was removed is never delivered, even if
 * the number is reused in the same batch (registrations carry a generation),
 * nor one for an fd that a callback earlier in the batch paused or stopped
 * asking for.
 *
 * OWNERSHIP ----------------------------------------------------------------
 *   FUTURES: a future has one producer and one consumer; the producer's part
 *   ends when it resolves or fails it, the consumer's part ends when it
 *   awaits it, hands it to a combinator or tn_run_sync, or releases it; the
 *   future frees itself when both parts have ended.
 * So: every tn_future* a function returns is yours to consume exactly once;
 * a value resolved with tn_future_resolve_owned is freed with its free
 * function unless the consumer takes it (TN_AWAIT and tn_all take it for
 * you: co->value / values[i] are then yours). Releasing a pending future
 * does not cancel it; tn_future_cancel does (the producer's on_cancel hook
 * is told at once, and its done callback still runs later).
 *   Loops, servers, events and queues: the creator frees them. fds you
 * register stay yours. Strings passed in are copied unless said otherwise.
 * Request strings (tn_http_method, tn_http_get_header, tn_http_body...)
 * belong to the request and live until its handler ends (a plain
 * handler's return, a coroutine's end); a buffered body is NUL-terminated.
 * By reference: memory given to a _ref call (tn_http_respond_ref,
 * tn_http_write_ref) or as tn_http_fetch_opts.body with body_free is the
 * library's from the call on, in every case, success or not: it is freed
 * with the function given once written or no longer needed. An executor
 * job started with tn_run_in_executor_owned owns its arg the same way.
 *
 * COROUTINES ----------------------------------------------------------------
 * Stackless, in the style of Adam Dunkels' protothreads: a coroutine is a
 * function over a frame struct whose FIRST member is a tn_co.
 *
 *   !! LOCAL VARIABLES DO NOT SURVIVE AN AWAIT. !!  The function returns at
 *   every TN_AWAIT/TN_YIELD/TN_SLEEP/TN_WAIT_UNTIL and is called again to
 *   resume; keep everything that must live across one in the frame.
 *
 *     struct fetch2 { tn_co co; tn_future *f[2]; void *v[2]; };
 *     static int fetch2(tn_co *co) {
 *         struct fetch2 *s = (struct fetch2 *)co;
 *         TN_BEGIN(co);
 *         s->f[0] = tn_sleep(co->loop, 10);  s->f[1] = tn_sleep(co->loop, 20);
 *         TN_AWAIT(co, tn_with_timeout(co->loop, tn_all(co->loop, s->f, 2, s->v), 1000));
 *         if (co->err) TN_FAIL(co, co->err);     // co->err: 0 or the error
 *         TN_END(co);                            // resolves the future
 *     }
 *     struct fetch2 *s = TN_CO_NEW(loop, struct fetch2); // zeroed; freed at its end
 *     tn_future *done = tn_spawn(loop, (tn_co *)s, fetch2);  // NULL: out of memory
 *
 * (see README.md and examples/coroutines.c for whole programs). tn_spawn
 * runs the body at once up to its first suspension and returns the future
 * of its end; a frame from tn_co_new/TN_CO_NEW is freed when it ends.
 * After TN_AWAIT, co->err is 0 or the future's error (a coroutine decides
 * whether to handle or propagate it) and co->value its value (yours).
 * Cancelling the coroutine's future cancels what it awaits: that await (or,
 * if none is under way, the next await, yield or wait) returns
 * TN_ECANCELLED, once, as in asyncio and Tornado; later awaits work
 * normally, so a coroutine can await its cleanup. TN_CANCELLED(co) tells,
 * and the future fails with TN_ECANCELLED when the coroutine ends.
 * Caveats: with the portable continuation (a switch on a number) an await
 * must not sit inside a `switch` of your own (the coroutine would resume
 * nowhere: it then fails with TN_ECORESUME); -DTN_CO_LABELS uses GCC/clang
 * labels-as-values instead, which lifts that. Two awaits may share a line
 * (__COUNTER__). TN_WAIT_UNTIL re-checks its condition after each loop
 * iteration that ran anything, so it costs nothing while the loop sleeps.
 * Cost: sizeof(tn_co) is 56 bytes on x86-64 (7 words), plus one 72-byte
 * future per spawn; nothing per await beyond the awaited future.
 *
 * HTTP CLIENT ----------------------------------------------------------------
 * tn_http_fetch returns a future of a tn_http_response (yours to free with
 * tn_http_response_free). Connections are pooled per host:port, at most
 * max_clients each (10, as Tornado); further fetches queue. Each failure
 * has its own code: TN_EQUEUETIMEOUT (no free connection in time),
 * TN_ECONNECTTIMEOUT, TN_ETIMEOUT (the request), TN_ERESOLVE, TN_EREFUSED,
 * TN_ECLOSED (cut off: a short body is never reported as success),
 * TN_EMALFORMED, TN_EHEADERS, TN_ETOOLARGE, TN_EREDIRECTS (5 by default),
 * TN_EINTERIM (more than TN_HTTP_MAX_INTERIM 1xx answers), TN_ENOTLS
 * (https is not supported). The user's Host and User-Agent replace the
 * defaults; the client frames the body itself (Content-Length and
 * Transfer-Encoding in opts->headers are TN_EINVAL). Redirects are followed (303, and
 * 301/302 after POST, become GET). A pooled connection the server closed
 * is retried once for idempotent methods, never for POST or PATCH.
 * Streaming: tn_http_fetch_opts.on_chunk receives the body in pieces.
 * The request and response parsers share their header and chunked code, and
 * client and server share the stream layer.
 *
 * HTTP SERVER ----------------------------------------------------------------
 * HTTP/1.1 with keep-alive, pipelining (responses strictly in order: a
 * connection serves one request at a time), chunked in both directions,
 * HEAD, Expect: 100-continue, header/body/idle/write-stall timeouts, limits with the
 * right status (400, 408, 413, 414, 431, 501, 505), connection shedding
 * (503), and graceful shutdown. After an error answer the connection closes
 * as nginx's does, lingering: our FIN first, then the client's further
 * bytes are read and dropped (up to linger_timeout_ms) so that a client
 * still sending a body is not reset before it reads the answer. Routes: "/users/{id}", "/static/{path*}";
 * 404, 405 (with Allow), 501 for unknown methods. A plain handler must
 * respond before it returns; a coroutine handler (tn_http_route_co) gets a
 * frame that begins with a tn_http_co and may await anything. A handler
 * that fails, or returns without responding, gets a 500. A client that
 * half-closes after sending a whole request still gets the answer (its
 * EOF only drops a request not yet received); one that resets cancels
 * the handler. A plain handler's body copies are capped (TN_EFULL past
 * TN_HTTP_WRITE_HIGH: see LIMITS); larger bodies go by reference or from
 * a coroutine that awaits tn_http_drain, which also gives the loop a turn
 * every TN_HTTP_WRITE_HIGH bytes. Graceful shutdown (tn_http_server_shutdown)
 * takes in the connections the kernel has accepted, finishes the requests
 * under way (heads and bodies still arriving included) and first requests
 * of connections that have sent nothing yet, answers them with
 * "Connection: close", closes idle ones at once and the rest at the
 * deadline. The request parser
 * (tn_http_parse_request) and response parser (tn_http_parse_response) are
 * pure functions over bytes, usable on their own, sharing their field-line
 * and chunked code.
 * The web layer (Tornado's RequestHandler conveniences): arguments from the
 * query and from urlencoded and multipart bodies (parsed before the
 * handler; a malformed body is 400), file parts, an incremental multipart
 * parser for streamed uploads (tn_multipart_feed from on_body), cookies,
 * Basic auth, set_status, redirects, error pages through one hook
 * (on_error), ETag/If-None-Match and Last-Modified/If-Modified-Since 304s,
 * an access-log hook. What it derives from a request lives in a per-request
 * arena freed with it: at most a few times the request's own bytes.
 *
 * TLS (HTTPS) ---------------------------------------------------------------
 * Optional, one macro: -DTN_TLS_OPENSSL (link -lssl -lcrypto; Debian:
 * libssl-dev) or -DTN_TLS_MBEDTLS (-lmbedtls -lmbedx509 -lmbedcrypto;
 * libmbedtls-dev: its 2.28 speaks TLS 1.2 only). Without either, https://
 * fails with TN_ENOTLS and the tn_tls_* functions do not exist. TLS sits
 * under tn_stream, so the server, the client and user streams get it
 * unchanged, and handshakes run on the loop, never blocking it.
 *     tn_tls_opts o = {0};  tn_tls_ctx *tls;
 *     o.cert_file = "cert.pem";  o.key_file = "key.pem";
 *     tn_tls_server_ctx_new(&o, &tls);
 *     tn_http_listen_tls(srv, "0.0.0.0", 8443, tls);  // next to tn_http_listen
 *     tn_tls_ctx_free(tls);                           // the server keeps a reference
 * A server context serves more names (tn_tls_ctx_add_sni) and takes new
 * certificates without a restart (tn_tls_ctx_reload: new connections get
 * them). The client verifies the server's chain (the system's store, or a
 * tn_tls_client_ctx_new with ca_file / ca_dir in tn_http_client_opts.tls)
 * and its name or IP address, sends SNI and ALPN http/1.1, and resumes
 * sessions per host:port (tn_http_response.tls_resumed). Each failure has
 * its code: TN_ETLS_UNTRUSTED, TN_ETLS_EXPIRED, TN_ETLS_NAME,
 * TN_ETLS_TIMEOUT (the client's handshake, within connect_timeout_ms),
 * TN_ETLS (protocol: no common version, garbage, plain HTTP where TLS was
 * expected). A server's handshake must be done within header_timeout_ms;
 * a client that speaks plain HTTP to a TLS port is answered a plain 400
 * that says so (as nginx does), then closed.
 *
 * ERRORS --------------------------------------------------------------------
 * Functions return 0 or a negative code; tn_strerror names it. System
 * errors are -errno. The library's own: TN_ENOMEM, TN_EINVAL, TN_ETIMEOUT,
 * TN_ECANCELLED, TN_ECLOSED, TN_EEXIST, TN_ENOENT, TN_EFULL, TN_EEMPTY,
 * TN_ESTATE, TN_ENOTSUP, TN_EAGAIN (parser: need more bytes), TN_ERESOLVE,
 * TN_EREFUSED, and the HTTP ones named by their status: TN_EMALFORMED (400),
 * TN_ETOOLARGE (413), TN_EURILONG (414), TN_EHEADERS (431), TN_ENOTIMPL
 * (501), TN_EVERSION (505), TN_EINTERIM (client: endless 1xx),
 * TN_ECORESUME (an await inside a switch, see COROUTINES), TN_ENOTLS and
 * the TLS ones (TN_ETLS, TN_ETLS_UNTRUSTED, TN_ETLS_EXPIRED, TN_ETLS_NAME,
 * TN_ETLS_TIMEOUT: see TLS). Functions
 * returning a pointer return NULL only for TN_ENOMEM (and tn_co_new for a
 * size smaller than a tn_co): every other failure comes back as a future
 * already failed with its code.
 *
 * CONFIGURATION MACROS (define before including; defaults shown) -----------
 *   TORNADO_IMPLEMENTATION  compile the implementation in this file
 *   TN_API                  linkage of every function (extern; e.g. static)
 *   TN_MALLOC(sz), TN_REALLOC(p, sz), TN_FREE(p)   malloc, realloc, free
 *   TN_NO_MALLOC            no allocator at all: every allocation from the
 *                           region each loop is given (tn_loop_opts.heap);
 *                           not with TLS (see MEMORY WITHOUT MALLOC)
 *   TN_ASSERT(c)            assert(c)
 *   TN_BACKEND_POLL         use poll(2), a self-pipe and sigaction
 *   TN_POSIX_ONLY           no Linux-only calls even on Linux (what BSD and
 *                           macOS builds get; with TN_BACKEND_POLL)
 *   TN_NO_THREADS           no pthreads: the executor runs work inline
 *   TN_NO_SIGNALS           no signal handling (tn_signal_add and friends)
 *   TN_NO_EXECUTOR          no tn_run_in_executor (names resolve inline)
 *   TN_NO_TCP               no tn_tcp_* / tn_stream_* API (the HTTP parts
 *                           keep the stream core they use)
 *   TN_NO_HTTP_SERVER       no server (nor its web layer, static files,
 *                           response cache)
 *   TN_NO_HTTP_CLIENT       no client (the three: no streams layer at all:
 *                           the loop, futures, coroutines, locks, cache)
 *   TN_HTTP_MINIMAL         the server without what a device's API rarely
 *                           needs: route patterns ({name}: TN_ENOTSUP, exact
 *                           paths only), chunked request bodies (501, then
 *                           close), the 100 Continue interim answer
 *                           (Expect is ignored: send the body), arguments
 *                           and files from bodies (tn_http_body still has
 *                           the bytes; query arguments stay), the automatic
 *                           ETag and 304s, the access log (on_access is not
 *                           called), the route response cache, and the
 *                           heads' one-walk parser (the strict path alone
 *                           parses them: the same answers, ~1.5 KB less
 *                           code, a few hundred instructions more a head)
 *   TN_CO_LABELS            labels-as-values continuations (GCC, clang)
 *   TN_TLS_OPENSSL          TLS through OpenSSL (see TLS)
 *   TN_TLS_MBEDTLS          TLS through mbedTLS (see TLS)
 *   TN_EXECUTOR_THREADS     4       pool threads (tn_loop_opts can override)
 *   TN_BUF_SIZE             16384   pooled I/O buffer size
 *   TN_BUF_BULK             65536   a stream's input during a bulk transfer: after a
 *                                   read that filled the buffer, the next read first
 *                                   doubles it, up to this (and the owner's limit),
 *                                   so a large body takes a quarter of the reads
 *                                   and polls; released with the buffer
 *   TN_BUF_POOL             64      free buffers (and stream I/O states) a loop keeps,
 *                                   and done fetch records a client keeps
 *   TN_FREE_LIST_MAX        1024    freed futures kept for reuse (plus the most
 *                                   executor jobs ever in flight at once); jobs:
 *                                   this or that most, whichever is more
 *   TN_STREAM_MAX_BUFFER    100 MiB a tn_stream read's size and queued output
 *   TN_HTTP_MAX_HEAD        65536   request head limit (431)
 *   TN_HTTP_MAX_TARGET      8192    request-target limit (414)
 *   TN_HTTP_MAX_HEADERS     100     header fields per request (431)
 *   TN_HTTP_MAX_CHUNK_EXT   4096    chunk-extension bytes (400)
 *   TN_HTTP_MAX_BODY        1 MiB   buffered request body (413)
 *   TN_HTTP_MAX_PARAMS      8       path parameters per route
 *   TN_HTTP_WRITE_LOW       64 KiB  tn_http_drain resolves below this
 *   TN_HTTP_WRITE_HIGH      256 KiB a response's unsent body copies (TN_EFULL
 *                                   past it); stop reading pipelined requests
 *                                   above it; a streaming handler's yield
 *   TN_HTTP_REQ_POOL        64      request objects a server keeps
 *   TN_HTTP_MAX_BUFFERED    64 MiB  server-wide input beyond each connection's
 *                                   first TN_BUF_SIZE (503)
 *   TN_HTTP_MAX_CONNECTIONS 10000   connections per server (503 beyond)
 *   TN_HTTP_MAX_INTERIM     16      1xx answers the client skips (TN_EINTERIM)
 *   TN_HTTP_MAX_ARGS        1000    query / urlencoded body pairs (414 / 413)
 *   TN_HTTP_MAX_PARTS       128     multipart/form-data parts (413)
 *   TN_HTTP_MAX_PART_HEAD   2048    bytes of a part's head (400)
 *   TN_CACHE_MAX_BYTES      64 MiB  an in-memory tn_cache's entries (LRU beyond)
 * Run-time options are structs where zero means the default
 * (tn_loop_opts, tn_http_server_opts, tn_http_route_opts).
 *
 * COST OF EACH OPERATION ----------------------------------------------------
 *   tn_add_callback           O(1) amortized, no allocation once warm
 *   tn_call_later/at/every    O(log n) (binary heap), no allocation once warm
 *   tn_cancel_timer           O(1): lazy, the heap entry is skipped when it
 *                             reaches the top (the heap is rebuilt when stale
 *                             entries outnumber live ones); a stale handle
 *                             is detected
 *   timer dispatch            O(log n) per timer
 *   tn_add/update/remove_handler  O(1) plus one epoll_ctl (none if the
 *                             interest did not change)
 *   future resolve -> done    O(1): one queued callback
 *   tn_all / tn_any           O(n) setup, O(n) per completed input
 *   TN_AWAIT on a done future continues at once; on a pending one, one
 *                             callback when it resolves
 *   TN_WAIT_UNTIL             O(waiters) per loop iteration
 *   tn_run_in_executor        one mutex round trip each way + one wake-up
 *                             (a burst behind a busy pool: one hand-over
 *                             for the batch); no allocation once as many
 *                             jobs as are in flight have been made (the
 *                             job and future free lists keep the most ever
 *                             in flight at once)
 *   HTTP request              no allocation on the hot path once warm
 *                             (pooled buffers and request objects), one
 *                             read and one write per batch of pipelined
 *                             requests, Date formatted once per second
 *   idle keep-alive connection  the connection (96 bytes on LP64, a 112-byte
 *                             malloc chunk) and its fd-table entry (24
 *                             bytes, in an array that grows by doubling);
 *                             no buffer and no I/O state (back in the
 *                             loop's pools) and no timer of its own (the
 *                             header, body and idle timeouts are lists in
 *                             deadline order, one timer each)
 *   active connection         + a 144-byte stream I/O state, a 16 KiB input
 *                             buffer (up to TN_BUF_BULK, 64 KiB, while a
 *                             body arrives faster than one buffer a turn,
 *                             charged to max_buffered_bytes), a 4 KiB
 *                             request object, output copies
 *   request or response head  one walk of the bytes when it came whole
 *                             (the usual case: fields stored as each line
 *                             end is found, 8 bytes a step); a head in
 *                             pieces, or anything unusual, goes through
 *                             the strict scan, O(n) over all its pieces
 *   TLS connection            + the library's state, kept for the
 *                             connection's life (and a 160-byte I/O state):
 *                             idle ~15 KiB with OpenSSL 3.0 (it releases
 *                             its buffers when idle), ~34 KiB with mbedTLS
 *                             2.28 (two 16 KiB record buffers, always); a
 *                             handshake in progress ~46 KiB / ~21 KiB; a
 *                             handshake costs the peer's key exchange and
 *                             signature (resumed: much less); each write is
 *                             one record per piece (measured on x86-64:
 *                             make bench, tests/tls.c)
 *
 * Measured (make -C bench counts: callgrind, strace and memcheck over a
 * fixed number of requests, the start-up subtracted; x86-64, -O2):
 *   keep-alive request        ~2,900 instructions in user space, 3 syscalls
 *                             (epoll_wait, read, sendmsg), 0 allocations
 *                             (nginx ~7,200; libhttp-parser alone ~1,250)
 *   pipelined request (x16)   ~1,900 instructions, 0.19 syscalls
 *   a connection per request  ~4,150 instructions, 10 syscalls, 1 allocation
 *   client fetch (keep-alive) ~6,200 instructions, 4 allocations
 *   100 MiB file sent         0.8-1.1x nginx's CPU (both sendfile), 2 MiB RSS
 *                             (the same from a coroutine's 16 KiB writes)
 *   100 MiB received          ~0.55x nginx's CPU (on_body, 64 KiB reads),
 *                             2 MiB RSS
 *   100 MiB downloaded        0.75x curl's CPU (examples/fetch), 1.8 MiB RSS
 * Object sizes (sizeof, LP64 x86-64 / ILP32 ARM): loop 496 / 272, future
 * 72 / 48, tn_co 56 / 32, timer slot 40 / 32 plus a 24-byte heap entry,
 * fd-table entry 24 / 16, connection 96 / 64, stream I/O state (active
 * connections only) 144 / 104, request object 4,104 / 2,152 (pooled).
 * Code (text of an -Os build with --gc-sections, x86-64): hello
 * 54 KB by default, 45 KB with TN_HTTP_MINIMAL, 42 KB for the smallest
 * server (TN_HTTP_MINIMAL, no client, TCP API, executor, signals or
 * threads, poll); the loop, futures and coroutines alone 9 KB (an empty
 * program: 1.2 KB). By layer (bench/layers.sh), hello's 54 KB are: loop
 * 5.3 KB, futures 0.7, coroutines 0.3, streams 3.8, HTTP parser and body
 * reader 6.5, server 12.9, routing 0.6, web conveniences (arguments,
 * forms, multipart, cookies, auth, conditional answers, log) 5.3, response
 * cache 0.4, the program 0.6; string literals 3.9, unwind tables 8.6 and
 * dynamic-linking tables 5.3 (the core program's 9 KB: 5.2 of code, 2.0
 * unwind, 1.5 linking). Unwind tables are 15-20% of each (built with
 * -fno-asynchronous-unwind-tables: 46 KB, 38 KB, 36 KB, 7.3 KB). What a
 * program never starts it does not link: no tn_cache_new, no cache (a
 * route's lookups go through the cache object); no job submitted, no
 * thread pool; no tn_signal_add, no signal code (the loop reaches each
 * through a pointer its first use sets).
 *
 * MEMORY WITHOUT MALLOC (TN_NO_MALLOC) --------------------------------------
 * The library then calls no malloc, realloc or free (make check-nomalloc
 * checks the object with nm -u and runs the suite so). Each loop gets a
 * region, and the loop itself is its first block:
 *     static char region[1 << 20];
 *     tn_loop_opts o = {0};
 *     o.heap = region;  o.heap_size = sizeof region;   // yours; outlives the loop
 *     tn_loop_new(&loop, &o);   // TN_EINVAL: no region, or too small for the loop
 * Everything of that loop (its servers, clients, caches, futures, frames,
 * timers, buffers) comes from it. Size classes: multiples of 16 up to 128,
 * then four to an octave (160, 192, 224, 256, 320, ...), each block with a
 * 16-byte header; a freed block waits on its class's free list for the
 * next request of that class (no splitting or merging: fragmentation is
 * bounded, and the region needed is the sum of each class's peak). A
 * request the region cannot meet is TN_ENOMEM, handled as a failed malloc
 * is (make check-failinject); a connection accepted then is answered a
 * fixed 503 with no memory and closed, and the region serves again as
 * connections end. tn_loop_get_stats: region_used (live blocks), and
 * region_peak (the most ever carved: a region of that size, plus 15 bytes
 * of alignment, would have served the same run). Measured on x86-64
 * (TN_TEST_FIGURES=1 tests/features/no-malloc nomalloc_figures): the loop
 * 2.8 KiB (the region's bookkeeping included), a future 96 B, a coroutine
 * frame its size rounded to a class + 16 (64 B: 80 B) plus its future, a
 * timer ~63 B, a server with a listener 1.9 KiB; N idle keep-alive
 * connections about 35 KiB + N x 350 B up to a few hundred, ~220 B each
 * beyond (the 35 KiB: a pooled buffer, request object and I/O state,
 * reused by whichever connection is active; the rest: the connection and
 * its share of the fd tables, which grow by doubling). Peaks measured for
 * N idle connections, loop and server included: 100 68 KiB, 300 135 KiB,
 * 1000 272 KiB, 4000 888 KiB; a 1 MiB region served 4092 and answered the
 * next with the fixed 503 (the fd table's doubling to 8192 did not fit).
 * Each connection active at the same moment takes ~21 KiB more (16 KiB
 * input, a 4 KiB request object), plus what LIMITS lets a request hold
 * beyond that (a long head, a buffered body, queued output). With threads a
 * mutex guards the region: executor threads free job results there and
 * tn_add_callback_threadsafe grows its queue from any thread.
 * What cannot work: TLS (an #error: OpenSSL and mbedTLS allocate with
 * malloc, and their contexts have no loop); tn_bytes_new (it has no loop:
 * always NULL; tn_bytes_new_in(loop, ...) works in every build);
 * tn_http_fetch_sync (its loop of its own has no region: TN_EINVAL). Inside
 * the C library, getaddrinfo (host names; a literal address needs none) and
 * pthread_create (the executor's threads) still allocate their own. A
 * region without TN_NO_MALLOC is TN_ENOTSUP.
 *
 * LIMITS AND SECURITY -------------------------------------------------------
 * Everything a peer can make the library hold has a bound (defaults shown;
 * tn_http_server_opts / tn_http_client_opts / the macros above change them).
 * Server, per connection:
 *   head        max_head_bytes 64 KiB (431), target 8 KiB (414), 100 fields
 *               (431); a head must arrive within header_timeout_ms 10 s (408)
 *   body        buffered: max_body_bytes 1 MiB (413), within body_timeout_ms
 *               60 s (408); streamed (on_body): one read at a time
 *   input       16 KiB; more only for a longer head or a buffered body, out of
 *               the server-wide max_buffered_bytes 64 MiB (503 when spent)
 *   output      a response's unsent body copies: TN_HTTP_WRITE_HIGH 256 KiB
 *               (TN_EFULL); pipelined requests wait while more than that is
 *               queued; a peer that takes no output for write_timeout_ms 60 s
 *               is cut (within 1.25x of it)
 *   idle        idle_timeout_ms 60 s; after an error answer, lingering reads
 *               and drops for at most linger_timeout_ms 5 s
 *   chunked     extensions TN_HTTP_MAX_CHUNK_EXT 4 KiB, trailers as a head
 * Server, all connections: max_connections 10000; beyond it a connection is
 * answered 503 (Retry-After: 1) and closed lingering, up to 64 +
 * max_connections / 8 at a time; past that it is closed at once. At EMFILE
 * accepting pauses 100 ms at a time (no spin).
 * Worst case of the defaults, in user space: per connection 96 B + request
 * 4 KiB + scratch (3 x target + 64, at most 24 KiB) + input 16 KiB + output
 * 256 KiB + a head (~1 KiB + the handler's headers) = ~300 KiB, so 10000
 * connections ~3 GiB, plus 64 MiB of buffered input: a small device sets
 * max_connections (100 connections: ~30 MiB + the budget).
 * Client: a response head 64 KiB (TN_EHEADERS), 100 fields, at most
 * TN_HTTP_MAX_INTERIM 1xx (TN_EINTERIM), a body max_body_bytes 100 MiB when
 * buffered (TN_ETOOLARGE; streamed with on_chunk: one read at a time),
 * request_timeout_ms 20 s from leaving the queue, 5 redirects.
 * Streams (tn_stream): input at most what the pending read asks for (one
 * buffer when none), a read at most TN_STREAM_MAX_BUFFER, queued output at
 * most TN_STREAM_MAX_BUFFER (TN_EFULL).
 * Writes use MSG_NOSIGNAL (or SO_NOSIGPIPE): no SIGPIPE, whether or not the
 * application ignores it. Request framing follows RFC 9112 strictly (bare
 * CR/LF, obs-fold, duplicate Host, CL with TE, unknown codings are refused
 * and the connection closed); the parsers and whole connections are fuzzed
 * (make check-fuzz) and every allocation failure is injected
 * (make check-failinject).
 */
#ifndef TORNADO_H
#define TORNADO_H

/* The implementation needs POSIX and Linux declarations (epoll, eventfd,
 * accept4): include tornado.h first in that one file, or define _GNU_SOURCE
 * before your first #include. */
#if defined(TORNADO_IMPLEMENTATION) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE 1
#endif
#if defined(TORNADO_IMPLEMENTATION) && !defined(_FILE_OFFSET_BITS)
#define _FILE_OFFSET_BITS 64 /* file parts past 2 GiB on 32-bit systems too */
#endif

#include <stddef.h>
#include <stdint.h>

#ifndef TN_API
#define TN_API extern
#endif
/* Every public function is declared TN__API: with -DTN_API=static the ones a
 * program does not call must not warn. */
#if defined(__GNUC__) || defined(__clang__)
#define TN__UNUSED __attribute__((unused))
#else
#define TN__UNUSED
#endif
#define TN__API TN_API TN__UNUSED

/* ==========================================================================
 * CONFIGURATION: every TN_* switch and default, defined here and only here.
 * Define any of them before including tornado.h (in the implementation file
 * at least; the limits below also size public arrays, so define them the
 * same way everywhere). The manual lists each with its meaning.
 * ========================================================================== */
#ifndef TN_MALLOC                /* every allocation goes through these three (TN_NO_MALLOC: none) */
#define TN_MALLOC(sz) malloc(sz)
#define TN_REALLOC(p, sz) realloc((p), (sz))
#define TN_FREE(p) free(p)
#endif
#ifndef TN_ASSERT                /* internal invariants */
#define TN_ASSERT(c) assert(c)
#endif
#ifndef TN_EXECUTOR_THREADS      /* executor pool threads (tn_loop_opts overrides) */
#define TN_EXECUTOR_THREADS 4
#endif
#ifndef TN_BUF_SIZE              /* a connection's pooled read/write buffer */
#define TN_BUF_SIZE 16384
#endif
#ifndef TN_BUF_BULK              /* a stream's input buffer in a bulk transfer */
#define TN_BUF_BULK 65536
#endif
#ifndef TN_BUF_POOL              /* free buffers a loop keeps for reuse */
#define TN_BUF_POOL 64
#endif
#ifndef TN_FREE_LIST_MAX         /* freed futures and jobs a loop keeps for reuse (see the manual) */
#define TN_FREE_LIST_MAX 1024
#endif
#ifndef TN_STREAM_MAX_BUFFER     /* a user stream's queued output (TN_EFULL beyond) */
#define TN_STREAM_MAX_BUFFER (100u * 1024 * 1024)
#endif
#ifndef TN_HTTP_MAX_HEAD         /* bytes of a head (or of a trailer section): 431 */
#define TN_HTTP_MAX_HEAD 65536
#endif
#ifndef TN_HTTP_MAX_TARGET       /* bytes of a request-target: 414 */
#define TN_HTTP_MAX_TARGET 8192
#endif
#ifndef TN_HTTP_MAX_HEADERS      /* field lines in a head (or trailer section): 431 */
#define TN_HTTP_MAX_HEADERS 100
#endif
#ifndef TN_HTTP_MAX_CHUNK_EXT    /* bytes after a chunk size, before its CRLF: 400 */
#define TN_HTTP_MAX_CHUNK_EXT 4096
#endif
#ifndef TN_HTTP_MAX_BODY         /* a buffered request body: 413 */
#define TN_HTTP_MAX_BODY (1024 * 1024)
#endif
#ifndef TN_HTTP_WRITE_HIGH       /* stop reading pipelined requests above this */
#define TN_HTTP_WRITE_HIGH (256 * 1024)
#endif
#ifndef TN_HTTP_WRITE_LOW        /* tn_http_drain resolves below this */
#define TN_HTTP_WRITE_LOW (64 * 1024)
#endif
#ifndef TN_HTTP_MAX_PARAMS       /* path parameters per route */
#define TN_HTTP_MAX_PARAMS 8
#endif
#ifndef TN_HTTP_REQ_POOL         /* request objects a server keeps for reuse */
#define TN_HTTP_REQ_POOL 64
#endif
#ifndef TN_HTTP_MAX_BUFFERED     /* server-wide input beyond each connection's first buffer: 503 */
#define TN_HTTP_MAX_BUFFERED (64u * 1024 * 1024)
#endif
#ifndef TN_HTTP_MAX_CONNECTIONS  /* a server's connections; more are answered 503 */
#define TN_HTTP_MAX_CONNECTIONS 10000
#endif
#ifndef TN_HTTP_MAX_INTERIM      /* 1xx responses the client skips before one final */
#define TN_HTTP_MAX_INTERIM 16
#endif
#ifndef TN_HTTP_MAX_ARGS         /* query or urlencoded-body pairs (413 beyond) */
#define TN_HTTP_MAX_ARGS 1000
#endif
#ifndef TN_HTTP_MAX_PARTS        /* parts of a multipart/form-data body (413 beyond) */
#define TN_HTTP_MAX_PARTS 128
#endif
#ifndef TN_HTTP_MAX_PART_HEAD    /* bytes of a multipart part's head (400 beyond) */
#define TN_HTTP_MAX_PART_HEAD 2048
#endif
#ifndef TN_CACHE_MAX_BYTES       /* an in-memory cache's keys, values and entries */
#define TN_CACHE_MAX_BYTES (64u * 1024 * 1024)
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------
 * Errors. 0 is success. System errors are -errno (-1 .. -999); the library's
 * own are below -1000. tn_strerror() names both.
 * ---------------------------------------------------------------------- */
#define TN_OK          0
#define TN_ENOMEM      (-1001) /* TN_MALLOC returned NULL (TN_NO_MALLOC: the region is spent) */
#define TN_EINVAL      (-1002) /* bad argument */
#define TN_ETIMEOUT    (-1003) /* a deadline passed */
#define TN_ECANCELLED  (-1004) /* the future was cancelled */
#define TN_ECLOSED     (-1005) /* the peer or the object was closed */
#define TN_EEXIST      (-1006) /* already registered */
#define TN_ENOENT      (-1007) /* not registered / no such item */
#define TN_EFULL       (-1008) /* a buffer or queue at its limit (try_put, a response's copies) */
#define TN_EEMPTY      (-1009) /* queue empty (try_get) */
#define TN_ESTATE      (-1010) /* wrong state: future already done, loop running */
#define TN_ENOTSUP     (-1011) /* not supported in this build */
#define TN_EAGAIN      (-1012) /* parser: incomplete, feed more bytes */
#define TN_ERESOLVE    (-1013) /* name resolution failed */
#define TN_EREFUSED    (-1014) /* connection refused */
#define TN_ECONNECTTIMEOUT (-1015) /* connecting took longer than its timeout */
#define TN_EQUEUETIMEOUT (-1016) /* waited too long for a free connection */
#define TN_ENOTLS      (-1017) /* https:// asked for: TLS is not supported */
#define TN_EREDIRECTS  (-1018) /* more redirects than allowed (a loop?) */
#define TN_EINTERIM    (-1019) /* more interim (1xx) responses than TN_HTTP_MAX_INTERIM */
#define TN_ECORESUME   (-1020) /* a coroutine resumed where no await is: an await inside a switch */
/* TLS: each failure its own code. */
#define TN_ETLS        (-1030) /* TLS protocol error: no common version or cipher, garbage, plain HTTP */
#define TN_ETLS_UNTRUSTED (-1031) /* the peer's certificate does not chain to a trusted CA */
#define TN_ETLS_EXPIRED (-1032) /* the peer's certificate has expired (or is not valid yet) */
#define TN_ETLS_NAME   (-1033) /* the certificate is not for the name (or address) asked for */
#define TN_ETLS_TIMEOUT (-1034) /* the TLS handshake took longer than its timeout */
/* HTTP message errors: each names the status a server answers with. */
#define TN_EMALFORMED  (-1100) /* 400 Bad Request (or a malformed response) */
#define TN_ETOOLARGE   (-1101) /* 413 Content Too Large */
#define TN_EURILONG    (-1102) /* 414 URI Too Long */
#define TN_EHEADERS    (-1103) /* 431 Request Header Fields Too Large */
#define TN_ENOTIMPL    (-1104) /* 501 Not Implemented */
#define TN_EVERSION    (-1105) /* 505 HTTP Version Not Supported */

/* Returns a static, human-readable string for any code above (or -errno). */
TN__API const char *tn_strerror(int err);

/* ------------------------------------------------------------------------
 * Event loop (Tornado's IOLoop)
 * ---------------------------------------------------------------------- */
typedef struct tn_loop tn_loop;
typedef struct tn_future tn_future;

/* Run-time options; a zeroed struct (or NULL) means every default. */
typedef struct tn_loop_opts {
    int executor_threads; /* 0: TN_EXECUTOR_THREADS; threads start on first use */
    /* TN_NO_MALLOC: the memory every allocation of this loop comes from
     * (the loop itself included; see MEMORY WITHOUT MALLOC). It stays the
     * caller's, and must outlive the loop. Without TN_NO_MALLOC a heap is
     * TN_ENOTSUP. */
    void *heap;
    size_t heap_size;
} tn_loop_opts;

typedef void (*tn_callback_fn)(tn_loop *loop, void *arg);

/* Creates a loop. *out receives it; the caller owns it and frees it with
 * tn_loop_free(). Returns 0, TN_ENOMEM or -errno (epoll/eventfd failed);
 * TN_EINVAL under TN_NO_MALLOC without a heap or with one too small to
 * hold the loop, TN_ENOTSUP for a heap without TN_NO_MALLOC. */
TN__API int tn_loop_new(tn_loop **out, const tn_loop_opts *opts);
/* Frees the loop and what it owns: its callback queue, timers, pools and
 * executor (queued jobs are cancelled, running ones joined); restores signal
 * dispositions. fds registered with tn_add_handler are not closed (yours).
 * Futures and coroutine frames still alive are not freed: settle and
 * release them first (tn_loop_get_stats shows what is left). Must not be
 * called while the loop is running. */
TN__API void tn_loop_free(tn_loop *loop);
/* The backend's name: "epoll" or "poll". */
TN__API const char *tn_loop_backend(const tn_loop *loop);

/* Runs until tn_loop_stop(). Returns 0, or TN_ESTATE if already running. */
TN__API int tn_loop_run(tn_loop *loop);
/* Makes tn_loop_run() return after the current iteration. Loop thread only;
 * from another thread, tn_add_callback_threadsafe() a callback that calls it.
 * A stop requested while the loop is not running makes the next run return
 * at once (as Tornado's IOLoop.stop()). */
TN__API void tn_loop_stop(tn_loop *loop);
/* One iteration for a loop driven by someone else's main loop: runs due
 * callbacks and timers, then waits at most max_wait_ms (0: do not block,
 * -1: as long as needed) for I/O and dispatches it. Returns 0 or -errno. */
TN__API int tn_loop_step(tn_loop *loop, int max_wait_ms);
/* Milliseconds until the loop has work: 0 if callbacks are pending, the time
 * to the next timer, or -1 if only I/O or a signal can wake it. */
TN__API int tn_loop_next_timeout(tn_loop *loop);
/* An fd that becomes readable when the loop has I/O to dispatch (the epoll
 * fd), for embedding in another poller; -1 with the poll backend. */
TN__API int tn_loop_fd(const tn_loop *loop);
/* The loop's cached monotonic clock, in ms (Tornado's IOLoop.time()). */
TN__API uint64_t tn_time_ms(const tn_loop *loop);

/* Counters of what the loop tracks: tests use them to prove nothing leaked. */
typedef struct tn_loop_stats {
    size_t handlers, timers, callbacks, futures, coroutines, jobs;
    /* TN_NO_MALLOC (0 otherwise): bytes of the region in live blocks
     * (headers included), and the most of it ever carved: a region of
     * region_peak bytes (plus alignment, 15 at most) would have served
     * this loop's life so far exactly as this one did. */
    size_t region_used, region_peak;
} tn_loop_stats;
TN__API void tn_loop_get_stats(const tn_loop *loop, tn_loop_stats *out);

/* --- fd watching (add_handler / update_handler / remove_handler) --- */
#define TN_READ  1u
#define TN_WRITE 2u
#define TN_ERROR 4u /* hang-up or error on the fd: always delivered with
                      * READ or WRITE; ask for it alone to hear only that */
typedef void (*tn_io_fn)(tn_loop *loop, int fd, unsigned events, void *arg);

/* Calls cb when fd is ready for `events` (TN_READ|TN_WRITE). Level-triggered.
 * With events 0 the fd is paused: nothing is delivered for it, hang-ups
 * included, until an update asks for an event again (TN_ERROR alone asks
 * for hang-ups and errors only).
 * The fd stays yours: remove it before you close it. Returns 0, TN_EEXIST,
 * TN_EINVAL or -errno. A callback may remove or close any fd, its own
 * included: an event already collected for a removed fd is never delivered,
 * even when the fd number is reused within the same batch. */
TN__API int tn_add_handler(tn_loop *loop, int fd, unsigned events, tn_io_fn cb, void *arg);
TN__API int tn_update_handler(tn_loop *loop, int fd, unsigned events);
TN__API int tn_remove_handler(tn_loop *loop, int fd);

/* --- callbacks --- */
/* Runs fn(loop, arg) on the next iteration, in FIFO order. 0 or TN_ENOMEM. */
TN__API int tn_add_callback(tn_loop *loop, tn_callback_fn fn, void *arg);
/* The same from any thread: wakes the loop (eventfd, or a self-pipe).
 * Without threads (TN_NO_THREADS) it is tn_add_callback. */
TN__API int tn_add_callback_threadsafe(tn_loop *loop, tn_callback_fn fn, void *arg);

/* --- timers (call_later / call_at / remove_timeout / PeriodicCallback) --- */
typedef uint64_t tn_timer; /* a handle; 0 is never a valid one */
/* Delays count from the loop's cached clock (tn_time_ms, read once per
 * iteration, as libuv's uv_now), not from the instant of the call.
 * fn(loop, arg) runs once delay_ms from now (call_at: at tn_time_ms() time
 * `when_ms`). *out (may be NULL) receives a handle for tn_cancel_timer.
 * Returns 0 or TN_ENOMEM. Timers due at the same time run in the order
 * they were scheduled. */
TN__API int tn_call_later(tn_loop *loop, uint64_t delay_ms, tn_callback_fn fn, void *arg, tn_timer *out);
TN__API int tn_call_at(tn_loop *loop, uint64_t when_ms, tn_callback_fn fn, void *arg, tn_timer *out);
/* Runs fn every interval_ms until cancelled. A run that is late skips the
 * missed ones (the next is the next multiple of the interval), as Tornado's
 * PeriodicCallback. */
TN__API int tn_call_every(tn_loop *loop, uint64_t interval_ms, tn_callback_fn fn, void *arg, tn_timer *out);
/* Cancels a pending timer. TN_ENOENT if it already ran or the handle is stale
 * (handles are never reused, so a stale one is harmless). */
TN__API int tn_cancel_timer(tn_loop *loop, tn_timer timer);

/* --- signals (none with TN_NO_SIGNALS) --- */
#ifndef TN_NO_SIGNALS
typedef void (*tn_signal_fn)(tn_loop *loop, int signo, void *arg);
/* Delivers signo to fn as a loop callback (never inside the signal handler),
 * e.g. SIGINT/SIGTERM for a graceful stop. Call it before starting threads of
 * your own (the signal is blocked and read from a signalfd on Linux with
 * epoll; elsewhere a handler writes it to the loop's self-pipe). Returns 0,
 * TN_EEXIST, TN_EINVAL, or -errno. */
TN__API int tn_signal_add(tn_loop *loop, int signo, tn_signal_fn fn, void *arg);
TN__API int tn_signal_remove(tn_loop *loop, int signo);
#endif

/* ------------------------------------------------------------------------
 * Futures (Tornado's Future)
 *
 * THE OWNERSHIP RULE: a future has one producer and one consumer; the
 * producer's part ends when it resolves or fails it, the consumer's part ends
 * when it awaits it, hands it to a combinator or tn_run_sync, or releases it;
 * the future frees itself when both parts have ended.
 * ---------------------------------------------------------------------- */
typedef void (*tn_free_fn)(void *p);
typedef void (*tn_future_fn)(tn_future *f, void *arg);

/* A pending future. NULL on TN_ENOMEM. */
TN__API tn_future *tn_future_new(tn_loop *loop);
/* Producer: resolves with value (ownership of value passes to the future; if
 * free_value is non-NULL and no consumer takes the value, the future frees it
 * with free_value). Ends the producer's part. Returns 0, or TN_ECANCELLED if
 * the future had been cancelled (the value was then freed at once). */
TN__API int tn_future_resolve(tn_future *f, void *value);
TN__API int tn_future_resolve_owned(tn_future *f, void *value, tn_free_fn free_value);
/* Producer: fails with err (< 0). Ends the producer's part. */
TN__API int tn_future_fail(tn_future *f, int err);
/* Producer: fn(f, arg) is called synchronously when the future is cancelled,
 * so the producer can stop its work (and then resolve or fail to end its
 * part). One hook per future. */
TN__API void tn_future_on_cancel(tn_future *f, tn_future_fn fn, void *arg);

/* Consumer: fn(f, arg) runs on a later loop iteration once f is done (never
 * inside resolve). One per future; TN_EEXIST for a second. The consumer's
 * part is still held: release (or take and release) inside fn. */
TN__API int tn_future_on_done(tn_future *f, tn_future_fn fn, void *arg);
/* Consumer: fails f with TN_ECANCELLED now and tells its producer.
 * TN_ESTATE if f is already done. Does not end the consumer's part.
 * The future of a coroutine (tn_spawn) is the exception, as asyncio's
 * Task.cancel: cancelling asks the coroutine to stop (what it awaits is
 * cancelled, so its await returns TN_ECANCELLED) and the future fails with
 * TN_ECANCELLED once the coroutine has ended (a value it returns anyway is
 * freed), never while it still runs. */
TN__API int tn_future_cancel(tn_future *f);
/* Consumer: ends the consumer's part. An untaken owned value is freed. */
TN__API void tn_future_release(tn_future *f);

TN__API int tn_future_done(const tn_future *f);
/* 0 if resolved, the error if failed, TN_ESTATE if still pending. */
TN__API int tn_future_error(const tn_future *f);
/* The value (borrowed: the future still owns it). */
TN__API void *tn_future_value(const tn_future *f);
/* The value, whose ownership passes to the caller. */
TN__API void *tn_future_take(tn_future *f);

/* --- combinators (gen.multi, with_timeout, sleep) ---
 * Each consumes its input futures (their consumer parts) and returns a new
 * future; NULL on TN_ENOMEM (inputs are then released). */
/* Resolves when all resolve; values[i] (may be NULL) then receives the value
 * of fs[i] (yours). Fails with the first failure; the others are cancelled
 * and values[] is left untouched. n may be 0. */
TN__API tn_future *tn_all(tn_loop *loop, tn_future **fs, size_t n, void **values);
/* Completes like the first of fs to complete (its value or error); *index
 * (may be NULL) receives which; the others are cancelled. */
TN__API tn_future *tn_any(tn_loop *loop, tn_future **fs, size_t n, size_t *index);
/* asyncio's gather(return_exceptions=True): resolves (value NULL) once every
 * input has completed, whatever the outcomes; results[i] then holds fs[i]'s
 * error (0 or < 0) and, when 0, its value (yours). Only a cancel of the
 * result fails it (TN_ECANCELLED; the inputs are cancelled, and results
 * is not written any more: values that come then are freed). Until it
 * completes, results[i] reads TN_ECANCELLED for an input not yet done. */
typedef struct tn_settled {
    int err;
    void *value;
} tn_settled;
TN__API tn_future *tn_all_settled(tn_loop *loop, tn_future **fs, size_t n, tn_settled *results);
/* Completes like f, or fails with TN_ETIMEOUT after timeout_ms, cancelling f
 * (its producer is told; nothing is leaked). */
TN__API tn_future *tn_with_timeout(tn_loop *loop, tn_future *f, uint64_t timeout_ms);
/* Resolves (value NULL) after ms; cancelling it cancels the timer. */
TN__API tn_future *tn_sleep(tn_loop *loop, uint64_t ms);
/* Runs the loop until f is done or timeout_ms passes (0: no timeout) and
 * consumes f (Tornado's run_sync). Returns f's error, or TN_ETIMEOUT (f is
 * then cancelled). *value (may be NULL) receives the value (yours). */
TN__API int tn_run_sync(tn_loop *loop, tn_future *f, uint64_t timeout_ms, void **value);

/* ------------------------------------------------------------------------
 * Coroutines (stackless, protothread-style; Tornado's coroutines)
 *
 * LOCALS DO NOT SURVIVE AN AWAIT. Keep every variable that must live across
 * TN_AWAIT/TN_YIELD/TN_SLEEP/TN_WAIT_UNTIL in a frame struct whose first
 * member is a tn_co.
 * ---------------------------------------------------------------------- */
typedef struct tn_co tn_co;
typedef int (*tn_co_fn)(tn_co *co);
struct tn_co {
    union { void *label; int line; } lc; /* where to resume */
    tn_loop *loop;
    tn_co_fn fn;
    tn_future *done;      /* completion: the coroutine is its producer */
    tn_future *awaiting;  /* what it waits for, if anything */
    void *value;          /* after an await: the value (yours) */
    int err;              /* after an await: 0 or the error */
    unsigned flags;       /* internal */
};
#define TN_CO_WAITING 0
#define TN_CO_DONE    1

/* Starts fn on the frame co (whose first member must be the tn_co) now, up to
 * its first suspension, and returns the future of its completion. The frame
 * must live until then; frames from tn_co_new are freed by the runtime when
 * the coroutine ends (and when tn_spawn fails). NULL on TN_ENOMEM. */
TN__API tn_future *tn_spawn(tn_loop *loop, tn_co *co, tn_co_fn fn);
/* A zeroed frame of `size` bytes that the runtime frees when its coroutine
 * ends. NULL on TN_ENOMEM. */
TN__API void *tn_co_new(tn_loop *loop, size_t size);
#define TN_CO_NEW(loop, type) ((type *)tn_co_new((loop), sizeof(type)))
/* True once the coroutine's completion future was cancelled (it stays true;
 * the cancellation itself is delivered once, see TN_AWAIT). */
#define TN_CANCELLED(co) (((co)->flags & 2u) != 0)

/* Internal entry points the macros expand to. */
TN__API int tn__co_await(tn_co *co, tn_future *f);
TN__API void tn__co_yield(tn_co *co);
TN__API int tn__co_wait(tn_co *co);
TN__API int tn__co_return(tn_co *co, int err, void *value, tn_free_fn free_value);
TN__API int tn__co_take_cancel(tn_co *co);

/* Continuations: labels-as-values with TN_CO_LABELS (GCC/clang; a `switch`
 * may then enclose an await), else a portable switch on a number, where a
 * TN_AWAIT must not sit inside a switch of your own. __COUNTER__ (where the
 * compiler has it) lets two awaits share a source line. */
#ifdef __COUNTER__
#define TN__ID __COUNTER__
#else
#define TN__ID __LINE__
#endif
#define TN__CAT2(a, b) a##b
#define TN__CAT(a, b) TN__CAT2(a, b)
#ifdef TN_CO_LABELS
/* Labels-as-values is a GNU extension (hence -Wpedantic off here), and gcc
 * 12 mistakes a label's address for a local's (-Wdangling-pointer). */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#define TN__PEDANTIC_OFF                                                    \
    _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wpedantic\"") \
        _Pragma("GCC diagnostic ignored \"-Wdangling-pointer\"")
#else
#define TN__PEDANTIC_OFF _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wpedantic\"")
#endif
#define TN__PEDANTIC_ON _Pragma("GCC diagnostic pop")
#define TN_BEGIN(co) \
    TN__PEDANTIC_OFF if ((co)->lc.label) goto *(co)->lc.label; TN__PEDANTIC_ON
#define TN__SET(co, n) TN__PEDANTIC_OFF (co)->lc.label = &&TN__CAT(tn__lc_, n); TN__PEDANTIC_ON
#define TN__MARK(n) TN__CAT(tn__lc_, n):
#define TN__END_BODY
#else
/* The default case catches a resume at a number no case of this switch has:
 * an await inside a switch of the user's (its case label went to that
 * switch). It fails the coroutine with TN_ECORESUME instead of ending it
 * quietly with err 0. */
#define TN_BEGIN(co) switch ((co)->lc.line) { default: return tn__co_return((co), TN_ECORESUME, NULL, NULL); case 0:
#define TN__SET(co, n) (co)->lc.line = (n) + 1 /* 0 is the start */
#define TN__MARK(n) case (n) + 1:
#define TN__END_BODY }
#endif

/* Awaits future expression f: afterwards co->err is 0 or its error and
 * co->value its value (yours). f may be NULL (then co->err is TN_ENOMEM).
 * Cancellation (of the coroutine's future) is delivered once, as asyncio
 * and Tornado do: the await under way, or the next one, yield or wait,
 * returns TN_ECANCELLED; later awaits work normally, so a cancelled
 * coroutine can still await its cleanup. */
#define TN_AWAIT(co, f) TN__AWAIT(co, f, TN__ID)
#define TN__AWAIT(co, f, n)                        \
    do {                                           \
        if (!tn__co_await((co), (f))) {            \
            TN__SET(co, n);                        \
            return TN_CO_WAITING;                  \
            TN__MARK(n);                           \
        }                                          \
    } while (0)
/* Runs again on the next loop iteration. */
#define TN_YIELD(co) TN__YIELD(co, TN__ID)
#define TN__YIELD(co, n)          \
    do {                          \
        tn__co_yield(co);         \
        TN__SET(co, n);           \
        return TN_CO_WAITING;     \
        TN__MARK(n);              \
    } while (0)
#define TN_SLEEP(co, ms) TN_AWAIT(co, tn_sleep((co)->loop, (ms)))
/* Waits until cond holds. cond is re-checked after every loop iteration that
 * ran something (free while the loop sleeps). co->err is TN_ECANCELLED if the
 * wait ended by cancellation, else 0. */
#define TN_WAIT_UNTIL(co, cond) TN__WAIT_UNTIL(co, cond, TN__ID)
#define TN__WAIT_UNTIL(co, cond, n)                           \
    do {                                                      \
        TN__SET(co, n);                                       \
        if (0) { TN__MARK(n); } /* no fall-through into a label */ \
        (co)->err = 0;                                        \
        if (!(cond)) {                                        \
            if (!tn__co_take_cancel(co)) return tn__co_wait(co); \
            (co)->err = TN_ECANCELLED;                        \
        }                                                     \
    } while (0)
/* End the coroutine: resolve its future with value, or fail it with err. */
#define TN_RETURN(co, value) return tn__co_return((co), 0, (value), NULL)
#define TN_RETURN_OWNED(co, value, free_fn) return tn__co_return((co), 0, (value), (free_fn))
#define TN_FAIL(co, err) return tn__co_return((co), (err), NULL, NULL)
#define TN_END(co) TN__END_BODY return tn__co_return((co), 0, NULL, NULL)

/* ------------------------------------------------------------------------
 * Executor (run_in_executor)
 * ---------------------------------------------------------------------- */
/* Runs on a pool thread; returns 0 or an error (< 0), *result its value. */
typedef int (*tn_work_fn)(void *arg, void **result);
/* Runs fn(arg) on the loop's thread pool; the future resolves on the loop
 * thread with *result (freed with free_result if nobody takes it, e.g. after
 * a cancel) or fails with fn's error, or with -EAGAIN if no pool thread
 * could start. Cancelling a job that has not started removes it (the future
 * fails with TN_ECANCELLED at once); a running one cannot be stopped, so its
 * future fails with TN_ECANCELLED only once fn has returned: a coroutine
 * awaiting it stays suspended until then, and whatever arg points into (its
 * frame, say) stays valid while fn runs. arg stays yours.
 * A job goes to the pool at once while a worker is free for it; once every
 * worker is taken, later ones wait (they could not start anyway) and go in
 * one hand-over when the loop next waits, so a job submitted behind a busy
 * pool by a callback that keeps the loop busy starts after it returns.
 * NULL only on TN_ENOMEM. Under TN_NO_THREADS fn runs inline, before this
 * returns, and the future comes back already done. TN_NO_EXECUTOR takes
 * these two out (host names are then resolved inline, blocking the loop). */
#ifndef TN_NO_EXECUTOR
TN__API tn_future *tn_run_in_executor(tn_loop *loop, tn_work_fn fn, void *arg, tn_free_fn free_result);
/* The same, and the job owns arg: free_arg(arg) runs on the loop thread
 * once fn has returned, or when the job is dropped without running
 * (cancelled while queued, or by tn_loop_free), or at once if this fails:
 * so a heap arg is never leaked nor freed under a running fn. */
TN__API tn_future *tn_run_in_executor_owned(tn_loop *loop, tn_work_fn fn, void *arg, tn_free_fn free_arg,
                                           tn_free_fn free_result);
#endif

/* ------------------------------------------------------------------------
 * Event and Queue (tornado.locks.Event, tornado.queues.Queue)
 * ---------------------------------------------------------------------- */
typedef struct tn_event tn_event;
/* A cleared event; NULL on TN_ENOMEM. tn_event_free fails its waiters with
 * TN_ECANCELLED. */
TN__API tn_event *tn_event_new(tn_loop *loop);
TN__API void tn_event_free(tn_event *ev);
TN__API void tn_event_set(tn_event *ev);   /* resolves every waiter */
TN__API void tn_event_clear(tn_event *ev);
TN__API int tn_event_is_set(const tn_event *ev);
/* A future that resolves when the event is set (at once if it is). */
TN__API tn_future *tn_event_wait(tn_event *ev);

typedef struct tn_queue tn_queue;
/* maxsize 0: unbounded. Items are opaque pointers; the queue never frees
 * them. tn_queue_free fails pending getters/putters with TN_ECANCELLED; items
 * still queued are returned to nobody (drain first if they own memory). */
TN__API tn_queue *tn_queue_new(tn_loop *loop, size_t maxsize);
TN__API void tn_queue_free(tn_queue *q);
/* Resolves once item is in the queue (at once unless full: backpressure).
 * Cancel a put and the item is not queued (it stays yours). */
TN__API tn_future *tn_queue_put(tn_queue *q, void *item);
/* Resolves with the oldest item. Cancel a get and no item is lost. */
TN__API tn_future *tn_queue_get(tn_queue *q);
TN__API int tn_queue_try_put(tn_queue *q, void *item); /* 0, TN_EFULL, TN_ENOMEM */
TN__API int tn_queue_try_get(tn_queue *q, void **item); /* 0, TN_EEMPTY */
TN__API size_t tn_queue_size(const tn_queue *q);
/* Marks one got item as processed (Queue.task_done); TN_ESTATE if none. */
TN__API int tn_queue_task_done(tn_queue *q);
/* Resolves when every item put has been marked done (Queue.join). */
TN__API tn_future *tn_queue_join(tn_queue *q);

/* ------------------------------------------------------------------------
 * Waiting on an fd, and one result for many waiters
 * ---------------------------------------------------------------------- */
/* A future that resolves once fd is ready for events (TN_READ, TN_WRITE;
 * TN_ERROR alone: a hang-up), its value the events that happened
 * ((uintptr_t)value), or fails with TN_ETIMEOUT after timeout_ms (0:
 * none). Cancelling it stops the wait. While it waits, the fd is
 * registered with the loop (TN_EEXIST if it already is: one wait at a time
 * per fd); the fd stays yours. How a non-blocking C driver (libpq, hiredis)
 * plugs in: send, then await its socket. NULL only on TN_ENOMEM. */
TN__API tn_future *tn_wait_fd(tn_loop *loop, int fd, unsigned events, unsigned timeout_ms);

/* One pending result, any number of consumers (a future has one): made
 * from f (consumed); each tn_shared_wait is a future (yours) that
 * completes like f, resolved with f's value, which stays the shared's
 * (borrowed: valid until tn_shared_free, which frees it with f's free
 * function). tn_shared_free cancels f if it still runs and fails the
 * waiters with TN_ECANCELLED. The pattern single-flight needs. */
typedef struct tn_shared tn_shared;
TN__API tn_shared *tn_shared_new(tn_loop *loop, tn_future *f);
TN__API tn_future *tn_shared_wait(tn_shared *s);
TN__API int tn_shared_done(const tn_shared *s);
TN__API int tn_shared_error(const tn_shared *s);  /* 0, the error, or TN_ESTATE while pending */
TN__API void *tn_shared_value(const tn_shared *s); /* borrowed; NULL unless resolved */
TN__API void tn_shared_free(tn_shared *s);

/* tornado.h HTTP/1.1 message parser: declarations.
 *
 * Written from RFC 9110 (HTTP Semantics) and RFC 9112 (HTTP/1.1).
 * Pure functions over bytes: no allocation, no callbacks, no globals. Every
 * pointer a parser returns points into the caller's buffer.
 *
 * Error codes used:
 *   TN_EAGAIN      incomplete: call again with more bytes
 *   TN_EMALFORMED  400 (or a response the client must discard)
 *   TN_ETOOLARGE   413 (chunked body over max_body)
 *   TN_EURILONG    414
 *   TN_EHEADERS    431
 *   TN_ENOTIMPL    501 (a transfer coding other than chunked in a request)
 *   TN_EVERSION    505 (HTTP/d.d with a major version other than 1)
 *
 * Choices made where the RFCs leave room (RFC 9112 section numbers):
 *   - Line terminator is CRLF only. A bare LF (allowed by section 2.2 as a
 *     MAY) is rejected like a bare CR: one framing rule leaves no room for a
 *     peer that splits lines differently (request smuggling).
 *   - Empty lines (CRLF) before the start line are skipped, for requests and
 *     responses alike (section 2.2); they count toward max_head.
 *   - HTTP/1.x with x in 2..9 is accepted and reported as version_minor 1.
 *   - obs-fold is rejected (section 5.2 allows a server to reject; for
 *     responses replacing it with SP would need a writable buffer).
 *   - Status line: the reason phrase may be empty, and "HTTP/1.1 200\r\n"
 *     (no SP) is tolerated. Status codes outside 100..599 are malformed.
 *   - Control characters (other than HTAB) are rejected anywhere in a head.
 *   - A Host field must occur at most once in every request and exactly once
 *     in HTTP/1.1 requests (section 3.2); its value must look like
 *     uri-host [":" port].
 */
/* One field line. name and value point into the parsed buffer; the value has
 * its leading and trailing whitespace (OWS) removed. */
typedef struct tn_http_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} tn_http_header;

/* Zero fields mean the defaults. max_head is clamped to INT_MAX because the
 * parsers return the head length as an int. */
typedef struct tn_http_limits {
    size_t max_head;    /* start line + fields, in bytes -> TN_EHEADERS */
    size_t max_target;  /* request-target, in bytes -> TN_EURILONG */
    size_t max_headers; /* number of field lines -> TN_EHEADERS */
} tn_http_limits;

typedef struct tn_http_message {
    /* request line (requests) */
    const char *method;
    size_t method_len;
    const char *target;
    size_t target_len;
    /* status line (responses) */
    int status;
    const char *reason;
    size_t reason_len;
    int version_minor; /* 0 or 1 (HTTP/1.x with x > 1 is reported as 1) */
    tn_http_header *headers; /* the caller's array, filled in */
    size_t num_headers;
    /* framing, derived from the fields by the parser */
    int64_t content_length; /* -1 when absent. A request without
                               Content-Length or chunked has no body; a
                               response that has no body reports 0. */
    int chunked;            /* the body uses the chunked coding: decode it
                               with tn_http_chunked_decode() */
    int close_delimited;    /* response body runs until the connection closes */
    int keep_alive;         /* connection may carry another message after
                               this one */
    int expect_continue;    /* HTTP/1.1 request with Expect: 100-continue */
    int upgrade;            /* request: HTTP/1.1 with an Upgrade field and
                               "upgrade" in Connection (the server may switch
                               protocols). response: 101, or 2xx to CONNECT:
                               the connection stops carrying HTTP after this
                               head (keep_alive is then 0). */
    const char *host;       /* requests: the Host field value, or the
                               authority of an absolute-form target (which
                               overrides Host, RFC 9112 section 3.2.2) */
    size_t host_len;
} tn_http_message;

/* Parses a request head.
 *   buf, len:  the bytes received so far; the head starts at buf[0].
 *   prev_len:  len of the previous call on this same head, 0 the first time.
 *              Bytes before prev_len are not examined again, so feeding one
 *              byte per call stays O(n) overall. (A prev_len > len restarts.)
 *   msg:       filled in on success; unspecified otherwise.
 *   headers, max_headers: the caller's array for the field lines.
 *   limits:    may be NULL for the defaults. More field lines than
 *              min(max_headers, limits->max_headers) is TN_EHEADERS.
 * Returns the number of bytes of the head (> 0; any bytes after it are the
 * body or the next message), TN_EAGAIN when the head is incomplete, or an
 * error. Errors that a prefix already proves (NUL or other control bytes, a
 * bare CR or LF, a head over max_head, a target over max_target, a first
 * byte that cannot start a method) are reported before the head is
 * complete, so the result never depends on how the input was split.
 * Never reads buf[len] or beyond. */
TN__API int tn_http_parse_request(const char *buf, size_t len, size_t prev_len,
                                 tn_http_message *msg, tn_http_header *headers,
                                 size_t max_headers,
                                 const tn_http_limits *limits);

/* Same for a response head. request_method (may be NULL) is the method of
 * the request this response answers: responses to HEAD, 1xx, 204 and 304
 * have no body; a 2xx to CONNECT and a 101 end HTTP on the connection.
 * Transfer codings other than chunked are left to the caller: chunked is set
 * when the last coding is chunked; when it is not, the body is
 * close-delimited (RFC 9112 section 6.3). */
TN__API int tn_http_parse_response(const char *buf, size_t len, size_t prev_len,
                                  tn_http_message *msg,
                                  tn_http_header *headers, size_t max_headers,
                                  const tn_http_limits *limits,
                                  const char *request_method);

/* Incremental decoder of the chunked transfer coding (RFC 9112 section 7.1),
 * for requests and responses. Zero-initialise it; optionally point trailers
 * at an array before the first call to receive the trailer fields. */
typedef struct tn_http_chunked {
    /* in (optional) */
    tn_http_header *trailers; /* array for the trailer fields, or NULL */
    size_t max_trailers;      /* its size */
    /* out */
    size_t num_trailers; /* trailer fields seen (stored if trailers != NULL) */
    uint64_t body_len;   /* sum of the chunk sizes announced so far */
    int done;            /* last chunk and trailer section consumed */
    /* private decoder state */
    int state;
    int err;              /* sticky error */
    int digits;           /* hex digits of the current chunk size */
    uint64_t size;        /* current chunk size, then bytes of it left */
    size_t ext_len;       /* bytes of the current chunk-ext */
    size_t trailer_seen;  /* bytes of the trailer section already scanned */
} tn_http_chunked;

/* Decodes the chunked body in place.
 *   buf, len: the next bytes of the body (see "Retained bytes" below).
 *   On return buf[0 .. *out_len) holds the body data decoded from this call
 *   (moved down over the framing); use it before touching buf again.
 *   max_body: TN_ETOOLARGE as soon as a chunk size would take the body past
 *   it (0: no limit). limits (may be NULL) bounds the trailer section:
 *   max_head bytes and max_headers fields, else TN_EHEADERS.
 * Returns the number of bytes consumed from buf (>= 0) or an error
 * (TN_EMALFORMED: bad hex, an empty or over-long size (more than 16 hex
 * digits, or over 2^63-1), a chunk-ext over TN_HTTP_MAX_CHUNK_EXT bytes or
 * with control bytes, missing CRLF, a bad trailer field line (same rules as
 * header fields, obs-fold rejected); TN_EHEADERS; TN_ETOOLARGE). Errors are
 * sticky. When the last chunk and the trailer section have been consumed it
 * sets dec->done: bytes after the body are left unconsumed (they belong to
 * the next message); later calls consume nothing.
 * Retained bytes: the trailer section is parsed only once it is complete, so
 * while it is incomplete its bytes are left unconsumed. The caller must pass
 * unconsumed bytes again at the start of the next call, followed by new ones
 * (the usual "keep the tail, read more" loop); the trailer section must fit
 * in the buffer (at most limits->max_head bytes). Trailer pointers point into
 * the buf of the call that set done. Any split of the input, down to one
 * byte per call, gives the same body, trailers and result. At most INT_MAX
 * bytes are consumed per call. */
TN__API int tn_http_chunked_decode(tn_http_chunked *dec, char *buf, size_t len,
                                  size_t *out_len, uint64_t max_body,
                                  const tn_http_limits *limits);

/* 1 when the field name equals name, ignoring ASCII case. */
TN__API int tn_http_header_eq(const tn_http_header *h, const char *name);
/* The first field named name (ASCII case-insensitive), or NULL. */
TN__API const tn_http_header *tn_http_find_header(const tn_http_message *m,
                                                 const char *name);
/* The status a server answers a parse error with: TN_EMALFORMED 400,
 * TN_ETOOLARGE 413, TN_EURILONG 414, TN_EHEADERS 431, TN_ENOTIMPL 501,
 * TN_EVERSION 505, anything else 500. */
TN__API int tn_http_error_status(int err);


/* ------------------------------------------------------------------------
 * TCP streams (Tornado's IOStream, TCPClient, TCPServer): the buffered,
 * non-blocking socket layer; the HTTP server and client use the same
 * stream core underneath.
 * ---------------------------------------------------------------------- */
typedef struct tn_stream tn_stream;

/* Bytes a stream read produced: free with tn_bytes_free (TN_FREE). data is
 * NUL-terminated for convenience (the NUL is not counted in len). */
typedef struct tn_bytes {
    size_t len;
    char data[1];
} tn_bytes;
TN__API void tn_bytes_free(void *bytes);
/* A copy of len bytes of data (NULL only for TN_ENOMEM): what a cache
 * fill or backend resolves with. */
TN__API tn_bytes *tn_bytes_new(const void *data, size_t len);
/* The same, from the loop's memory: under TN_NO_MALLOC, tn_bytes_new has no
 * region to use and is always NULL; tn_bytes_new_in works in every build. */
TN__API tn_bytes *tn_bytes_new_in(tn_loop *loop, const void *data, size_t len);

/* TN_NO_TCP takes this API out (the HTTP server and client keep the
 * stream core they use). */
#ifndef TN_NO_TCP
/* Connects to host:port (a numeric address, or a name resolved on the
 * executor; with TN_NO_THREADS resolution blocks the loop). Resolves with a
 * tn_stream* that is yours (tn_stream_close). Fails with TN_ERESOLVE,
 * TN_EREFUSED, TN_ECONNECTTIMEOUT (timeout_ms; 0: none) or -errno. */
TN__API tn_future *tn_tcp_connect(tn_loop *loop, const char *host, int port, unsigned timeout_ms);
typedef void (*tn_accept_fn)(tn_stream *stream, void *arg);
/* Listens on host:port (NULL: 127.0.0.1; 0: any free port, *port_out gets
 * it); fn receives each accepted stream (yours). *listener_fd gets the fd
 * to pass to tn_tcp_unlisten. */
TN__API int tn_tcp_listen(tn_loop *loop, const char *host, int port, tn_accept_fn fn, void *arg,
                         int *listener_fd, int *port_out);
TN__API void tn_tcp_unlisten(tn_loop *loop, int listener_fd);

/* One read at a time per stream (TN_ESTATE otherwise). Each resolves with
 * a tn_bytes* (yours). */
/* Up to and including delim (1..16 bytes); TN_ETOOLARGE if max bytes pass
 * without it, TN_ECLOSED if the peer closes first. */
TN__API tn_future *tn_stream_read_until(tn_stream *s, const char *delim, size_t max);
/* Exactly n bytes; TN_ECLOSED if the peer closes first. */
TN__API tn_future *tn_stream_read_bytes(tn_stream *s, size_t n);
/* Everything until the peer closes; TN_ETOOLARGE beyond max bytes. */
TN__API tn_future *tn_stream_read_until_close(tn_stream *s, size_t max);
/* Queues a copy of data; resolves when it has been written to the socket.
 * Queued output is bounded by TN_STREAM_MAX_BUFFER (TN_EFULL beyond). */
TN__API tn_future *tn_stream_write(tn_stream *s, const void *data, size_t len);
/* fn(stream, arg) runs (from the loop) when the peer closes or the stream
 * fails; the stream is still yours to tn_stream_close. */
TN__API void tn_stream_on_close(tn_stream *s, void (*fn)(tn_stream *s, void *arg), void *arg);
/* Closes the fd, fails the pending read and writes with TN_ECLOSED, and
 * frees the stream. */
TN__API void tn_stream_close(tn_stream *s);
TN__API int tn_stream_fd(const tn_stream *s);
#endif /* TN_NO_TCP */

/* ------------------------------------------------------------------------
 * TLS, under streams (build with -DTN_TLS_OPENSSL and -lssl -lcrypto, or
 * -DTN_TLS_MBEDTLS and -lmbedtls -lmbedx509 -lmbedcrypto; without either
 * these functions do not exist and https:// fails with TN_ENOTLS)
 *
 * A context holds the certificates and the policy; connections made from it
 * hold a reference (free it whenever: they keep what they use). Handshakes
 * run on the loop, never blocking; a client verifies the peer by default
 * (the system's CA store, or ca_file / ca_dir) with its name or address,
 * sends SNI and ALPN http/1.1; each failure has its own code (TN_ETLS_*).
 * ---------------------------------------------------------------------- */
typedef struct tn_tls_ctx tn_tls_ctx;
typedef struct tn_tls_opts {
    const char *cert_file, *key_file; /* PEM: the certificate chain and its key (servers) */
    const char *ca_file, *ca_dir;     /* clients: whom to trust (NULL both: the system's store) */
    int insecure;                     /* clients: verify nothing (tests only) */
    int min_version, max_version;     /* 12, 13; 0: TLS 1.2 up to the best the library has */
    const char *ciphers;              /* OpenSSL's TLS 1.2 cipher list; NULL: its default */
} tn_tls_opts;
/* 0, TN_EINVAL (a file missing or not PEM, a key that does not match, a
 * version other than 0, 12, 13, or min above max), TN_ENOTSUP (a version
 * the library lacks: mbedTLS 2.28 has no TLS 1.3), TN_ENOMEM. Strings are copied. */
#if defined(TN_TLS_OPENSSL) || defined(TN_TLS_MBEDTLS)
TN__API int tn_tls_server_ctx_new(const tn_tls_opts *opts, tn_tls_ctx **out);
TN__API int tn_tls_client_ctx_new(const tn_tls_opts *opts, tn_tls_ctx **out);
/* Servers: another certificate, chosen when a client asks for name (SNI). */
TN__API int tn_tls_ctx_add_sni(tn_tls_ctx *ctx, const char *name, const char *cert_file, const char *key_file);
/* Reads every certificate and key again (short-lived certificates): new
 * connections use them; all or nothing (on error the old ones stay). */
TN__API int tn_tls_ctx_reload(tn_tls_ctx *ctx);
TN__API void tn_tls_ctx_free(tn_tls_ctx *ctx);
/* "openssl" or "mbedtls". */
TN__API const char *tn_tls_backend(void);
/* Makes s a TLS stream (a client's with host: SNI and the name to verify;
 * a server's with a server context, host NULL): resolves once the
 * handshake is done, or fails with its error (the stream is then closed:
 * still yours to tn_stream_close). Reads and writes wait for it. */
#ifndef TN_NO_TCP
TN__API tn_future *tn_stream_start_tls(tn_stream *s, tn_tls_ctx *ctx, const char *host);
#endif
#endif /* TN_TLS_OPENSSL || TN_TLS_MBEDTLS */

/* ------------------------------------------------------------------------
 * Cache (what Tornado apps write as cache.get(key) / cache.set(key, v))
 *
 * Byte values under string keys, each with a TTL, in memory under a byte
 * budget with LRU eviction, or in another store through a backend (e.g.
 * Redis across processes: examples/redis_cache.h). Single-flight: when many
 * fetches miss the same key at once, one fill computes it and every one of
 * them gets its result; a failed fill is not cached and fails them all.
 * Values given to the caller are copies (tn_bytes, yours: tn_bytes_free).
 * Memory (in memory): at most max_bytes of entries (key + value + 64 bytes
 * each); a value that alone exceeds it is not stored (TN_ETOOLARGE).
 * ---------------------------------------------------------------------- */
typedef struct tn_cache tn_cache;
/* A store. Each call returns a future the cache consumes (NULL only on
 * TN_ENOMEM): get resolves with a tn_bytes* (the value, the consumer's) or
 * NULL for a miss; set, del and del_prefix ("" is everything) resolve with
 * NULL; free frees impl with the cache. */
typedef struct tn_cache_backend {
    tn_future *(*get)(void *impl, const char *key);
    tn_future *(*set)(void *impl, const char *key, const void *data, size_t len, uint64_t ttl_ms);
    tn_future *(*del)(void *impl, const char *key);
    tn_future *(*del_prefix)(void *impl, const char *prefix);
    void (*free)(void *impl);
} tn_cache_backend;
typedef struct tn_cache_opts {
    size_t max_bytes;                 /* in memory: 64 MiB (TN_CACHE_MAX_BYTES) */
    uint64_t ttl_ms;                  /* a value's default time to live: 60 s */
    const tn_cache_backend *backend;  /* NULL: in memory */
    void *backend_impl;               /* the cache's from tn_cache_new on */
} tn_cache_opts;
typedef struct tn_cache_stats {
    uint64_t hits, misses;          /* fetches and gets answered from the store / not (per call) */
    uint64_t fills, fill_errors;    /* computations started (one per flight) / failed */
    uint64_t evictions, expirations, entries, bytes; /* in memory */
    uint64_t waiters;                          /* fetches waiting now */
} tn_cache_stats;
TN__API int tn_cache_new(tn_loop *loop, const tn_cache_opts *opts, tn_cache **out);
/* Fetches in flight fail with TN_ECANCELLED (their fills are cancelled). */
TN__API void tn_cache_free(tn_cache *c);
/* The fill of a missed key: a future of a tn_bytes* (the cache takes it). */
typedef tn_future *(*tn_cache_fill_fn)(const char *key, void *arg);
/* Resolves with a copy of key's value: cached, or computed by fill (once
 * per key, whatever the number of concurrent fetches; stored for ttl_ms, 0:
 * the default). Fails with the fill's error. Cancelling one fetch leaves
 * the others and the fill alone. */
TN__API tn_future *tn_cache_fetch(tn_cache *c, const char *key, uint64_t ttl_ms, tn_cache_fill_fn fill, void *arg);
/* A lookup: a copy of the value, or NULL (a miss). */
TN__API tn_future *tn_cache_get(tn_cache *c, const char *key);
/* Stores a copy (ttl_ms 0: the default); TN_ETOOLARGE if it cannot fit. */
TN__API tn_future *tn_cache_set(tn_cache *c, const char *key, const void *data, size_t len, uint64_t ttl_ms);
/* Invalidation: one key, every key with a prefix ("" or NULL: all). */
TN__API tn_future *tn_cache_delete(tn_cache *c, const char *key);
TN__API tn_future *tn_cache_delete_prefix(tn_cache *c, const char *prefix);
TN__API void tn_cache_get_stats(const tn_cache *c, tn_cache_stats *out);

#ifndef TN_NO_HTTP_SERVER /* takes the server and its web layer out */
/* ------------------------------------------------------------------------
 * HTTP server (Tornado's HTTPServer, Application and RequestHandler)
 * ---------------------------------------------------------------------- */
typedef struct tn_http_server tn_http_server;
typedef struct tn_http_request tn_http_request;

/* One finished request, for the access log (tn_http_server_opts.on_access;
 * tn_http_access_combined formats it). The strings are the request's. A
 * head that did not parse (its 400, 414, 431, 505 or 408) is logged too,
 * with method and target "" (combined: "-" for the request line, as
 * nginx; for an entry of the caller's, NULL strings count as absent). */
typedef struct tn_http_access {
    const char *method, *target;
    int version_minor, status;
    uint64_t bytes;       /* body bytes sent */
    uint64_t duration_us; /* from its first byte to its end */
    int64_t time;         /* when it ended, seconds since the epoch */
    const char *user_agent, *referer, *user; /* NULL when absent */
    char peer[46];        /* the client's address, "" if unknown */
} tn_http_access;
typedef void (*tn_http_access_fn)(const tn_http_access *entry, void *arg);
/* The error answer hook (Tornado's write_error): called with the request
 * and the status of every error answer (404, 405, 501, a failed handler's
 * 500, a 413/503 to a parsed head, tn_http_send_error); it may respond
 * (tn_http_respond, headers...). If it does not, the server's short text
 * answer goes. Framing errors of an unparsed head (400, 414, 431, 505, a
 * head's 408) are answered by the server alone. */
typedef void (*tn_http_error_fn)(tn_http_request *req, int status, void *arg);

/* Run-time options; zero means the default given. */
typedef struct tn_http_server_opts {
    size_t max_head_bytes;      /* request line + fields: 65536 (TN_HTTP_MAX_HEAD) -> 431 */
    size_t max_target_bytes;    /* request-target: 8192 (TN_HTTP_MAX_TARGET) -> 414 */
    size_t max_body_bytes;      /* buffered body: 1 MiB (TN_HTTP_MAX_BODY) -> 413 */
    size_t max_buffered_bytes;  /* all connections' input beyond their first TN_BUF_SIZE
                                   (long heads, buffered bodies): 64 MiB
                                   (TN_HTTP_MAX_BUFFERED) -> 503 */
    size_t max_connections;     /* beyond it new connections get 503 and close:
                                   10000 (TN_HTTP_MAX_CONNECTIONS) */
    unsigned header_timeout_ms; /* from a request's first byte to its last head byte: 10000 */
    unsigned body_timeout_ms;   /* to receive the whole body: 60000 */
    unsigned idle_timeout_ms;   /* an idle keep-alive connection is closed: 60000 */
    unsigned write_timeout_ms;  /* output pending with no progress: closed: 60000 */
    unsigned linger_timeout_ms; /* after an error answer, the client's further bytes are
                                   read and dropped this long before closing: 5000 */
    int backlog;                /* listen(2) backlog: 511 */
    int reuseport;              /* set SO_REUSEPORT (one listener per worker) */
    int no_etag;                /* 1: no automatic ETag / 304 (see tn_http_respond) */
    tn_http_error_fn on_error;  /* error answers (see tn_http_error_fn); NULL: text */
    void *on_error_arg;
    tn_http_access_fn on_access; /* once per finished request; NULL: no log */
    void *on_access_arg;
} tn_http_server_opts;

/* A handler of a plain route: it must respond before it returns (else 500). */
typedef void (*tn_http_handler_fn)(tn_http_request *req, void *arg);
/* A streamed request body arrives in pieces (Tornado's stream_request_body);
 * return 0 to go on or an error to answer 400 and close. */
typedef int (*tn_http_body_fn)(tn_http_request *req, const char *data, size_t len, void *arg);

/* A coroutine handler's frame begins with this; the framework allocates and
 * frees the frame (its size is given at registration), zeroed, and sets req. */
typedef struct tn_http_co {
    tn_co co;
    tn_http_request *req;
    void *arg; /* the route's arg */
} tn_http_co;

/* Per-route options; zero means the server's default. */
typedef struct tn_http_route_opts {
    size_t max_body_bytes;  /* raise (or lower) the body limit for this route */
    tn_http_body_fn on_body; /* stream the body to this callback instead of buffering it */
    size_t frame_size;      /* coroutine routes: sizeof your frame (>= sizeof(tn_http_co)) */
    int no_etag;            /* 1: no automatic ETag / 304 for this route */
    /* 1: a client that closes its side (EOF) while the handler runs cancels
     * it, as a reset does (its awaits fail with TN_ECANCELLED: a database
     * statement it waits for is stopped). 0, the default: the answer is
     * still written, as a client may half-close once its request is sent. */
    int cancel_on_close;
    /* A response cache: GET answers made with tn_http_respond(_ref) are
     * kept in cache for cache_ttl_ms (0: the cache's default) under the
     * request's path and query and the request headers named in cache_vary
     * ("Accept-Language, Authorization"), and later GETs and HEADs of the
     * same key are answered from it without the handler. Only 2xx answers
     * without Set-Cookie are kept unless cache_any_status. Answers get
     * Cache-Control: max-age (the time left) unless the handler set one;
     * the ETag / 304 rules apply to cached answers too. */
    tn_cache *cache;
    uint64_t cache_ttl_ms;
    const char *cache_vary;
    int cache_any_status;
} tn_http_route_opts;

/* Creates a server on loop; *out is yours (tn_http_server_free). */
TN__API int tn_http_server_new(tn_loop *loop, const tn_http_server_opts *opts, tn_http_server **out);
/* Closes every connection at once and frees the server. Coroutine handlers
 * still running are cancelled; the server is freed when the last of them
 * has ended (on a later loop iteration). */
TN__API void tn_http_server_free(tn_http_server *srv);
/* Binds and listens (host NULL: 127.0.0.1; port 0: any free port, see
 * tn_http_server_port). May be called more than once. 0 or -errno. */
TN__API int tn_http_listen(tn_http_server *srv, const char *host, int port);
/* The same over TLS with ctx (a server context: its certificates, SNI,
 * reload); the server holds a reference. A handshake must be done within
 * header_timeout_ms (a client that stalls in it, sends garbage or plain
 * HTTP is cut). */
#if defined(TN_TLS_OPENSSL) || defined(TN_TLS_MBEDTLS)
TN__API int tn_http_listen_tls(tn_http_server *srv, const char *host, int port, tn_tls_ctx *ctx);
#endif
TN__API int tn_http_server_port(const tn_http_server *srv);
/* The server's loop; a request's server (a plain handler reaches the loop so). */
TN__API tn_loop *tn_http_server_loop(const tn_http_server *srv);
TN__API tn_http_server *tn_http_request_server(const tn_http_request *req);
/* Routes method (NULL: any method) and pattern to a plain handler. Patterns
 * are literal segments, {name} for one segment, and a trailing {name*} for
 * the rest of the path: "/users/{id}", "/static/{path*}". Earlier routes win.
 * HEAD is served by the GET route when no HEAD route exists. */
TN__API int tn_http_route(tn_http_server *srv, const char *method, const char *pattern,
                         tn_http_handler_fn fn, void *arg, const tn_http_route_opts *opts);
/* The same with a coroutine handler: opts->frame_size gives the frame. */
TN__API int tn_http_route_co(tn_http_server *srv, const char *method, const char *pattern,
                            tn_co_fn fn, void *arg, const tn_http_route_opts *opts);
/* Graceful shutdown: stops accepting, closes idle connections, lets requests
 * in flight finish (their connections then close), and after deadline_ms
 * closes what is left. The future resolves once no connection remains. */
TN__API tn_future *tn_http_server_shutdown(tn_http_server *srv, unsigned deadline_ms);
/* Connections open right now (for tests and metrics). */
TN__API size_t tn_http_server_connections(const tn_http_server *srv);
/* Serves an already connected socket (inetd, socket activation, tests):
 * from a 0 return on, fd is the server's (it closes it). 0, TN_ESTATE
 * (shutting down), TN_EFULL (over the connection limits), TN_ENOMEM. */
TN__API int tn_http_serve_fd(tn_http_server *srv, int fd);

/* --- the request (valid until the response is finished) ---
 * Strings are NUL-terminated and point into the connection's buffer. */
TN__API const char *tn_http_method(const tn_http_request *req);
TN__API const char *tn_http_target(const tn_http_request *req); /* as sent */
TN__API const char *tn_http_path(const tn_http_request *req);   /* percent-decoded, no query */
TN__API int tn_http_version_minor(const tn_http_request *req);
/* "https" when the request came over TLS, else "http" (Tornado's
 * request.protocol; a proxy's X-Forwarded-Proto is the handler's to trust). */
TN__API const char *tn_http_protocol(const tn_http_request *req);
/* A path parameter ({name} in the route), percent-decoded; NULL if absent. */
TN__API const char *tn_http_param(tn_http_request *req, const char *name);
/* A query parameter, percent-decoded ('+' is a space); the first if
 * repeated; NULL if absent. */
TN__API const char *tn_http_query(tn_http_request *req, const char *name);
/* Arguments, as Tornado's RequestHandler: the query's and (for a buffered
 * application/x-www-form-urlencoded or multipart/form-data body, parsed
 * before the handler runs: a malformed one is answered 400, more than
 * TN_HTTP_MAX_ARGS pairs (414 in the query, 413 in the body) or
 * TN_HTTP_MAX_PARTS parts 413) the body's.
 * _argument gives the last value (or def), _arguments every value in order
 * (up to max in out; the count is returned). Strings are the request's. */
TN__API const char *tn_http_argument(tn_http_request *req, const char *name, const char *def);
TN__API size_t tn_http_arguments(tn_http_request *req, const char *name, const char **out, size_t max);
TN__API const char *tn_http_query_argument(tn_http_request *req, const char *name, const char *def);
TN__API size_t tn_http_query_arguments(tn_http_request *req, const char *name, const char **out, size_t max);
TN__API const char *tn_http_body_argument(tn_http_request *req, const char *name, const char *def);
TN__API size_t tn_http_body_arguments(tn_http_request *req, const char *name, const char **out, size_t max);
/* All arguments, query first: i < tn_http_argument_count (TN_ENOENT past). */
TN__API size_t tn_http_argument_count(tn_http_request *req);
TN__API int tn_http_argument_at(tn_http_request *req, size_t i, const char **name, const char **value);
/* The file parts of a multipart/form-data body (Tornado's request.files). */
typedef struct tn_http_file {
    const char *name;         /* the form field */
    const char *filename;     /* as the client sent it: never use it as a path */
    const char *content_type; /* application/octet-stream if none was given */
    const char *data;         /* the bytes (within the body; not NUL-terminated) */
    size_t len;
} tn_http_file;
TN__API size_t tn_http_file_count(const tn_http_request *req);
TN__API const tn_http_file *tn_http_file_at(const tn_http_request *req, size_t i);
/* The first file part of field name, or NULL. */
TN__API const tn_http_file *tn_http_get_file(const tn_http_request *req, const char *name);
/* A cookie's value (the last if repeated; quotes removed), or NULL. */
TN__API const char *tn_http_cookie(tn_http_request *req, const char *name);
TN__API size_t tn_http_cookie_count(tn_http_request *req);
TN__API int tn_http_cookie_at(tn_http_request *req, size_t i, const char **name, const char **value);
/* Basic credentials from Authorization: 0 (*user, *pass: the request's),
 * TN_ENOENT (none, or another scheme), TN_EMALFORMED. */
TN__API int tn_http_basic_auth(tn_http_request *req, const char **user, const char **pass);
/* A header field value (case-insensitive name; the first if repeated). */
TN__API const char *tn_http_get_header(const tn_http_request *req, const char *name);
TN__API size_t tn_http_header_count(const tn_http_request *req);
TN__API int tn_http_header_at(const tn_http_request *req, size_t i, const char **name, const char **value);
/* The buffered body (empty for streamed-body routes). */
TN__API const char *tn_http_body(const tn_http_request *req, size_t *len);
/* The route's per-request frame (coroutine routes). */
TN__API void *tn_http_frame(tn_http_request *req);
/* True once the client has gone away: writes are then dropped. */
TN__API int tn_http_closed(const tn_http_request *req);
/* The client's address as text ("127.0.0.1", "::1"; no port) into buf,
 * NUL-terminated; 46 bytes hold any (INET6_ADDRSTRLEN). Tornado's
 * request.remote_ip without xheaders: the socket's peer, not what an
 * X-Forwarded-For or X-Real-Ip says. 0; TN_EINVAL if cap is too small,
 * TN_ECLOSED once the connection is gone; TN_ENOTSUP for a socket that is
 * not IP (tn_http_serve_fd on a Unix socket). */
TN__API int tn_http_remote_ip(const tn_http_request *req, char *buf, size_t cap);

/* --- the response ---
 * Statuses are final ones, 200..599 (TN_EINVAL otherwise: the server sends
 * the interim 100 Continue itself). content_type NULL: the Content-Type
 * set with tn_http_set_header, else "text/plain; charset=utf-8" (none after
 * tn_http_clear_header(req, "Content-Type")).
 * Memory: a response's body copies not yet taken by the kernel are at most
 * TN_HTTP_WRITE_HIGH (256 KiB): a copy past it fails with TN_EFULL (a
 * plain handler sends nothing before it returns, so that is its whole
 * budget). A larger body goes by reference (the _ref calls: the caller's
 * memory, freed with free_fn(free_arg) once written) or from a coroutine
 * handler that awaits tn_http_drain between writes. */
/* Sets a response header, replacing any of that name (case-insensitive).
 * TN_EINVAL (and nothing set) if name is not a token or value holds CR, LF,
 * NUL or another control byte, and for Content-Length and
 * Transfer-Encoding (the server frames the body: give the length to
 * tn_http_respond or tn_http_begin); "Connection: close" closes the
 * connection after this response. TN_ESTATE after headers went out. */
TN__API int tn_http_set_header(tn_http_request *req, const char *name, const char *value);
/* Adds a header line, keeping those of the same name (Set-Cookie). */
TN__API int tn_http_add_header(tn_http_request *req, const char *name, const char *value);
/* Removes the headers of that name: 0, or TN_ENOENT if there was none.
 * "Content-Type" also drops the default one (text/plain; charset=utf-8), so
 * the answer has none unless tn_http_respond names one (Tornado's
 * clear_header("Content-Type")); 0 then, set or not. */
TN__API int tn_http_clear_header(tn_http_request *req, const char *name);
/* The status for an answer that names none (tn_http_write's, tn_http_finish's
 * first head; 200 otherwise): Tornado's set_status. */
TN__API int tn_http_set_status(tn_http_request *req, int status);
/* Cookie attributes; zero means absent (path: "/"). */
typedef struct tn_http_cookie_opts {
    const char *path, *domain;
    int64_t max_age;   /* seconds; 0: none (a session cookie); < 0: Max-Age=0 */
    int64_t expires;   /* seconds since the epoch; 0: none */
    int secure, http_only;
    const char *same_site; /* "Lax", "Strict", "None" or NULL */
} tn_http_cookie_opts;
/* Adds a Set-Cookie. TN_EINVAL if name is not a token, value not
 * cookie-octets (no space, quote, comma, semicolon, backslash, control:
 * nothing can be injected), or an attribute holds ';' or control bytes. */
TN__API int tn_http_set_cookie(tn_http_request *req, const char *name, const char *value,
                               const tn_http_cookie_opts *opts);
/* Expires the cookie (path and domain as it was set with; NULL: "/", none). */
TN__API int tn_http_clear_cookie(tn_http_request *req, const char *name, const char *path, const char *domain);
/* Answers 301, 302 (status 0), 303, 307 or 308 with Location: url, absolute
 * or relative, as given (TN_EINVAL for another status or CR/LF in url). */
TN__API int tn_http_redirect(tn_http_request *req, const char *url, int status);
/* An error answer (400..599) through the server's error hook (see
 * tn_http_error_fn), the handler's headers dropped: Tornado's send_error. */
TN__API int tn_http_send_error(tn_http_request *req, int status);
/* 401 with WWW-Authenticate: Basic realm="realm". */
TN__API int tn_http_auth_challenge(tn_http_request *req, const char *realm);
/* Apache's combined log line for entry into buf (snprintf rules): the
 * length it needs. */
TN__API size_t tn_http_access_combined(const tn_http_access *entry, char *buf, size_t cap);
/* Responds with a whole body (copied; TN_EFULL over TN_HTTP_WRITE_HIGH);
 * Content-Length is set. A 200 to GET or HEAD gets an ETag (a hash of the
 * body, as Tornado's compute_etag) unless the handler set one or the route
 * or server sets no_etag, and becomes a 304 without a body when the
 * request's If-None-Match has it (weak comparison, "*", lists) or, with no
 * If-None-Match, when If-Modified-Since is not older than a Last-Modified
 * the handler set. */
TN__API int tn_http_respond(tn_http_request *req, int status, const char *content_type,
                           const char *body, size_t len);
/* The same with the body by reference: it must stay valid until
 * free_fn(free_arg) runs (once it is written or the connection is gone;
 * at once if this fails: it is the server's from the call, in every case).
 * free_fn may be NULL (static data). */
TN__API int tn_http_respond_ref(tn_http_request *req, int status, const char *content_type,
                               const char *body, size_t len, tn_free_fn free_fn, void *free_arg);
/* Streaming: start the response (length -1: unknown, so chunked for
 * HTTP/1.1 and close-delimited for HTTP/1.0), write pieces, then finish.
 * tn_http_finish returns TN_EINVAL when fewer bytes than the declared
 * length were written (the connection then closes: the body is cut). */
TN__API int tn_http_begin(tn_http_request *req, int status, const char *content_type, int64_t length);
TN__API int tn_http_write(tn_http_request *req, const char *data, size_t len);
/* tn_http_write by reference (see tn_http_respond_ref). */
TN__API int tn_http_write_ref(tn_http_request *req, const char *data, size_t len, tn_free_fn free_fn,
                             void *free_arg);
/* Resolves once the output has drained below TN_HTTP_WRITE_LOW
 * (backpressure for large bodies), and no sooner than the next loop
 * iteration after every TN_HTTP_WRITE_HIGH bytes of body (so a handler
 * streaming to a fast reader still lets the loop serve others); fails with
 * TN_ECLOSED if the client left. */
TN__API tn_future *tn_http_drain(tn_http_request *req);
TN__API int tn_http_finish(tn_http_request *req);
/* The reason phrase of a status code ("Not Found"); "Unknown" otherwise. */
TN__API const char *tn_http_reason(int status);
/* Body bytes from a file, by reference: len bytes of fd from off, sent
 * with sendfile(2) where it exists (a read loop into one pooled buffer
 * elsewhere), so a file of any size holds no user-space buffer. The fd is
 * the server's from the call on, in every case (closed once sent). A file
 * that shrinks while it is sent cuts the response (the connection closes). */
TN__API int tn_http_write_file(tn_http_request *req, int fd, uint64_t off, uint64_t len);

/* --- static files (Tornado's StaticFileHandler) ---
 * Serves the directory root under prefix ("/static/": it must begin and end
 * with '/'), GET and HEAD: Content-Type from the extension (a built-in table;
 * mime overrides), Content-Length, Last-Modified, ETag ("mtime-size"),
 * If-None-Match / If-Modified-Since -> 304, one Range (bytes=a-b, a-, -n)
 * -> 206 with Content-Range, unsatisfiable -> 416 with the size in its
 * Content-Range (If-Range honoured; several ranges: the whole file). Paths: "." and ".." and empty
 * segments (also percent-encoded) are 404, a real path outside root (a
 * symlink) 403, a directory its index file, else 403 (no listing). Error
 * answers go through the error hook. The file goes out with
 * tn_http_write_file. root is resolved (realpath) now; TN_EINVAL if it is
 * not a directory one can resolve. */
typedef const char *(*tn_http_mime_fn)(const char *path, void *arg);
typedef struct tn_http_static_opts {
    const char *index;    /* a directory's index: "index.html" */
    unsigned max_age;     /* Cache-Control: max-age=N (0: none) */
    tn_http_mime_fn mime; /* Content-Type of a path, or NULL for the table */
    void *mime_arg;
} tn_http_static_opts;
TN__API int tn_http_static(tn_http_server *srv, const char *prefix, const char *root,
                           const tn_http_static_opts *opts);

#endif /* TN_NO_HTTP_SERVER */

/* --- multipart/form-data, incrementally (for a streamed body: on_body) ---
 * tn_multipart_begin takes the request's Content-Type (its boundary);
 * tn_multipart_feed takes the body in pieces of any size and calls fn with
 * TN_MP_BEGIN (part: name, filename or NULL, content_type or NULL; valid
 * until the next part), TN_MP_DATA (data, len: the part's bytes, in order)
 * and TN_MP_END; fn returns 0 to go on, else feed stops with that code.
 * tn_multipart_end tells whether the closing delimiter came. Errors:
 * TN_EMALFORMED (400), TN_ETOOLARGE (more than TN_HTTP_MAX_PARTS parts).
 * Memory: the struct (about 4 KiB with the default TN_HTTP_MAX_PART_HEAD),
 * nothing else: a part's data is never buffered. */
typedef struct tn_http_part {
    const char *name, *filename, *content_type;
} tn_http_part;
#define TN_MP_BEGIN 1
#define TN_MP_DATA 2
#define TN_MP_END 3
typedef int (*tn_multipart_fn)(void *arg, int event, const tn_http_part *part, const char *data, size_t len);
typedef struct tn_multipart {
    /* private */
    char delim[4 + 70 + 1]; /* CRLF "--" boundary */
    size_t dlen, match, parts, head_len;
    int state, err;
    tn_http_part part;
    char head[TN_HTTP_MAX_PART_HEAD];
    char strs[TN_HTTP_MAX_PART_HEAD];
} tn_multipart;
TN__API int tn_multipart_begin(tn_multipart *mp, const char *content_type);
TN__API int tn_multipart_feed(tn_multipart *mp, const char *data, size_t len, tn_multipart_fn fn, void *arg);
TN__API int tn_multipart_end(tn_multipart *mp);

/* --- JSON ---
 * Writes s[0..len) as a JSON string literal (RFC 8259: quotes, \" \\ and
 * control bytes escaped; bytes >= 0x80 pass as they are, so give UTF-8)
 * into dst with a NUL, snprintf-like: returns the length it needs. For
 * parsing JSON use a library (the examples use cJSON). */
TN__API size_t tn_json_escape(char *dst, size_t cap, const char *s, size_t len);

#ifndef TN_NO_HTTP_CLIENT /* takes the client out */
/* ------------------------------------------------------------------------
 * HTTP client (Tornado's AsyncHTTPClient and HTTPClient)
 * ---------------------------------------------------------------------- */
typedef struct tn_http_client tn_http_client;

typedef struct tn_http_client_opts {
    size_t max_clients;           /* connections per host:port: 10 */
    unsigned connect_timeout_ms;  /* default for requests: 20000 */
    unsigned request_timeout_ms;  /* default for requests: 20000 */
    unsigned idle_timeout_ms;     /* a pooled connection unused this long closes: 30000 */
    size_t max_body_bytes;        /* default for requests: 100 MiB */
    tn_tls_ctx *tls;              /* https: this client context (the client holds a reference);
                                     NULL: one that verifies with the system's store */
} tn_http_client_opts;

typedef int (*tn_http_chunk_fn)(const char *data, size_t len, void *arg);

typedef struct tn_http_fetch_opts {
    const char *method;           /* NULL: GET (POST if a body is given) */
    const char *const *headers;   /* "Name: value" strings, NULL-terminated list */
    const char *body;             /* copied; may hold NULs (body_len) */
    size_t body_len;
    tn_free_fn body_free;         /* set: body is not copied but taken by reference;
                                     body_free(body) runs when the fetch ends (every
                                     way it ends, a failing tn_http_fetch included) */
    unsigned connect_timeout_ms;  /* 0: the client's */
    unsigned request_timeout_ms;  /* 0: the client's (from leaving the queue to the end) */
    unsigned queue_timeout_ms;    /* waiting for a free connection; 0: request_timeout_ms */
    int no_redirects;             /* 1: return 3xx as they are */
    int max_redirects;            /* 0: 5 */
    size_t max_body_bytes;        /* 0: the client's */
    tn_http_chunk_fn on_chunk;    /* streaming: body pieces go here, not into body */
    void *chunk_arg;
} tn_http_fetch_opts;

typedef struct tn_http_response {
    int status;
    char *reason;
    tn_http_header *headers; /* copies, NUL-terminated */
    size_t num_headers;
    char *body;              /* NUL-terminated; body_len bytes (0 in streaming mode) */
    size_t body_len;
    char *effective_url;     /* the URL after redirects */
    int redirects;
    int reused;              /* sent on a pooled connection (no connect, no handshake) */
    int tls_resumed;         /* https: the TLS session was resumed (an earlier one reused) */
    uint64_t queue_ms, total_ms; /* time waiting for a connection; whole fetch */
} tn_http_response;

TN__API int tn_http_client_new(tn_loop *loop, const tn_http_client_opts *opts, tn_http_client **out);
/* Closes every connection; fetches still pending fail with TN_ECANCELLED. */
TN__API void tn_http_client_free(tn_http_client *c);
/* Fetches url ("http://host[:port]/path"; https:// fails with TN_ENOTLS).
 * The request's Host and User-Agent are the client's unless opts->headers
 * names them (any case: the user's replace them); Content-Length and
 * Transfer-Encoding there are TN_EINVAL (the client frames the body).
 * Resolves with a tn_http_response* (yours: tn_http_response_free), for
 * any status; fails with TN_EQUEUETIMEOUT, TN_ECONNECTTIMEOUT, TN_ETIMEOUT
 * (request), TN_EREDIRECTS, TN_ECLOSED (cut off mid-response),
 * TN_EMALFORMED, TN_EHEADERS, TN_ETOOLARGE, TN_ERESOLVE, TN_EREFUSED.
 * opts may be NULL; everything in it is copied. A stale pooled connection
 * is retried once for idempotent methods, never for POST or PATCH. */
TN__API tn_future *tn_http_fetch(tn_http_client *c, const char *url, const tn_http_fetch_opts *opts);
TN__API void tn_http_response_free(void *resp);
TN__API const char *tn_http_response_header(const tn_http_response *r, const char *name);
/* The synchronous client (Tornado's HTTPClient): a private loop for one
 * fetch. *out is yours. */
TN__API int tn_http_fetch_sync(const char *url, const tn_http_fetch_opts *opts, tn_http_response **out);

#endif /* TN_NO_HTTP_CLIENT */

#ifdef __cplusplus
}
#endif
#endif /* TORNADO_H */

/* ======================================================================== */
/*                             IMPLEMENTATION                               */
/* ======================================================================== */
#ifdef TORNADO_IMPLEMENTATION
#ifndef TORNADO_IMPLEMENTATION_DONE
#define TORNADO_IMPLEMENTATION_DONE

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <poll.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <assert.h>


/* Linux-only calls (epoll, eventfd, signalfd, accept4, SOCK_NONBLOCK,
 * TIOCOUTQ, sendfile) are used only where this holds;
 * TN_POSIX_ONLY turns them off, which is what a BSD or macOS build gets. */
#if defined(__linux__) && !defined(TN_POSIX_ONLY)
#define TN__LINUX 1
#include <sys/sendfile.h>
#else
#define TN__LINUX 0
#endif
#include <sys/uio.h>

#if TN__LINUX && !defined(TN_BACKEND_POLL)
#define TN__EPOLL 1
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#else
#define TN__EPOLL 0
#endif

#ifndef TN_NO_THREADS
#include <pthread.h>
#endif

/* TLS: one backend, or none (then https:// is TN_ENOTLS). */
#if defined(TN_TLS_OPENSSL) && defined(TN_TLS_MBEDTLS)
#error "define one of TN_TLS_OPENSSL and TN_TLS_MBEDTLS"
#endif
#if defined(TN_TLS_OPENSSL)
#define TN__TLS 1
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#elif defined(TN_TLS_MBEDTLS)
#define TN__TLS 1
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_cache.h>
#include <mbedtls/x509_crt.h>
#else
#define TN__TLS 0
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* -------------------------------------------------------------- allocation
 * Every allocation of the library goes through tn__malloc(l, n) and
 * tn__realloc(l, p, n), which name the loop the memory is for, and every
 * release through tn__free(p). In the ordinary build they are TN_MALLOC,
 * TN_REALLOC and TN_FREE (the loop is not even evaluated: no cost). Under
 * TN_NO_MALLOC they take blocks from the loop's region (tn_loop_opts.heap).
 * tn__free needs no loop: a block's header names its region, so the free
 * functions the library hands out (tn_bytes_free, tn_http_response_free,
 * a tn_free_fn of a future's value) work without one.
 * ---------------------------------------------------------------------- */
#ifdef TN_NO_MALLOC
#if TN__TLS
#error "TN_NO_MALLOC cannot be combined with TLS: the TLS libraries allocate with malloc themselves"
#endif
typedef struct tn__region tn__region;
static void *tn__lmalloc(tn_loop *l, size_t n);
static void *tn__lrealloc(tn_loop *l, void *p, size_t n);
static void tn__region_free(void *p);
#define tn__malloc(l, sz) tn__lmalloc((l), (sz))
#define tn__realloc(l, p, sz) tn__lrealloc((l), (p), (sz))
#define tn__free(p) tn__region_free(p)
#else
#define tn__malloc(l, sz) TN_MALLOC(sz)
#define tn__realloc(l, p, sz) TN_REALLOC((p), (sz))
#define tn__free(p) TN_FREE(p)
#endif

#ifdef TN_NO_MALLOC
/* The region allocator. Size classes: every multiple of 16 up to 128, then
 * four to an octave (160, 192, 224, 256, 320, 384, ...): at most a fifth
 * of a block is slack. Each block is a 16-byte header (its region and
 * class) and its class's bytes; blocks are carved from the region's bump
 * pointer and, once freed, kept on their class's free list for the next
 * allocation of that class (never split or merged: a class's footprint is
 * the most of its blocks ever live at once, so fragmentation is bounded by
 * the peaks, not by the order of frees). A request the region cannot meet
 * is NULL (the library's TN_ENOMEM paths take it from there). One mutex
 * guards it when threads exist: the loop thread allocates and frees, and
 * so may the executor's threads (a job's result freed after a cancel,
 * tn_bytes_free of a resolved name) and tn_add_callback_threadsafe's
 * callers (it grows its queue). */
#define TN__RCLASSES (8 + 4 * (8 * (unsigned)sizeof(size_t) - 8))
typedef union tn__rblock {
    struct {
        tn__region *r;
        size_t cls;
    } h;
    union tn__rblock *next; /* while free: the next of its class */
    long double ld;         /* the alignment malloc gives */
    long long ll;
    void *p;
    char pad[16];
} tn__rblock;
struct tn__region {
    char *base, *top, *end; /* carved: base .. top */
    tn__rblock *free_list[TN__RCLASSES];
    size_t used; /* bytes of live blocks, headers included */
#ifndef TN_NO_THREADS
    pthread_mutex_t lock;
#endif
};
static size_t tn__rclass_size(size_t c) {
    size_t j, q;
    if (c < 8) return 16 * (c + 1);
    j = (c - 8) / 4;
    q = (c - 8) % 4;
    return ((size_t)128 << j) + (q + 1) * ((size_t)32 << j);
}
/* The smallest class that holds n bytes, or TN__RCLASSES for none. */
static size_t tn__rclass(size_t n) {
    size_t j = 0, step;
    if (n <= 128) return n ? (n - 1) / 16 : 0;
    if (n > SIZE_MAX / 4) return TN__RCLASSES;
    while (((size_t)256 << j) < n) j++;
    step = (size_t)32 << j;
    return 8 + 4 * j + (n - ((size_t)128 << j) + step - 1) / step - 1;
}
static void tn__region_lock(tn__region *r) {
#ifndef TN_NO_THREADS
    pthread_mutex_lock(&r->lock);
#else
    (void)r;
#endif
}
static void tn__region_unlock(tn__region *r) {
#ifndef TN_NO_THREADS
    pthread_mutex_unlock(&r->lock);
#else
    (void)r;
#endif
}
/* Lays a region over mem (aligned up), NULL if it cannot even hold its own
 * bookkeeping. */
static tn__region *tn__region_init(void *mem, size_t size) {
    uintptr_t a = ((uintptr_t)mem + sizeof(tn__rblock) - 1) & ~(uintptr_t)(sizeof(tn__rblock) - 1);
    size_t skip = (size_t)(a - (uintptr_t)mem), head = (sizeof(tn__region) + sizeof(tn__rblock) - 1) & ~(sizeof(tn__rblock) - 1);
    tn__region *r;
    if (!mem || size < skip + head) return NULL;
    r = (tn__region *)a;
    memset(r, 0, sizeof *r);
    r->base = (char *)a;
    r->top = r->base + head;
    r->end = (char *)mem + size;
#ifndef TN_NO_THREADS
    if (pthread_mutex_init(&r->lock, NULL) != 0) return NULL;
#endif
    return r;
}
static void tn__region_destroy(tn__region *r) {
#ifndef TN_NO_THREADS
    pthread_mutex_destroy(&r->lock);
#else
    (void)r;
#endif
}
static void *tn__region_alloc(tn__region *r, size_t n) {
    size_t c = tn__rclass(n ? n : 1), sz;
    tn__rblock *b;
    if (c >= TN__RCLASSES) return NULL;
    sz = tn__rclass_size(c);
    tn__region_lock(r);
    if ((b = r->free_list[c]) != NULL) {
        r->free_list[c] = b->next;
    } else if ((size_t)(r->end - r->top) >= sizeof *b && (size_t)(r->end - r->top) - sizeof *b >= sz) {
        b = (tn__rblock *)(void *)r->top;
        r->top += sizeof *b + sz;
    }
    if (b) {
        b->h.r = r;
        b->h.cls = c;
        r->used += sizeof *b + sz;
    }
    tn__region_unlock(r);
    return b ? b + 1 : NULL;
}
static void tn__region_free(void *p) {
    tn__rblock *b;
    tn__region *r;
    size_t c;
    if (!p) return;
    b = (tn__rblock *)p - 1;
    r = b->h.r;
    c = b->h.cls;
    tn__region_lock(r);
    r->used -= sizeof *b + tn__rclass_size(c);
    b->next = r->free_list[c];
    r->free_list[c] = b;
    tn__region_unlock(r);
}
static void *tn__region_realloc(tn__region *r, void *p, size_t n) {
    void *np;
    size_t have;
    if (!p) return tn__region_alloc(r, n);
    have = tn__rclass_size(((tn__rblock *)p - 1)->h.cls);
    if (n <= have) return p; /* its class still holds it (never shrunk: the block stays its class) */
    if (!(np = tn__region_alloc(r, n))) return NULL;
    memcpy(np, p, have);
    tn__region_free(p);
    return np;
}
#endif

/* ---------------------------------------------------------------- errors */
const char *tn_strerror(int err) {
    switch (err) {
    case TN_OK: return "success";
    case TN_ENOMEM: return "out of memory";
    case TN_EINVAL: return "invalid argument";
    case TN_ETIMEOUT: return "timed out";
    case TN_ECANCELLED: return "cancelled";
    case TN_ECLOSED: return "closed";
    case TN_EEXIST: return "already registered";
    case TN_ENOENT: return "not found";
    case TN_EFULL: return "full: a buffer or queue is at its limit";
    case TN_EEMPTY: return "queue empty";
    case TN_ESTATE: return "invalid state for this operation";
    case TN_ENOTSUP: return "not supported";
    case TN_EAGAIN: return "incomplete input";
    case TN_ERESOLVE: return "name resolution failed";
    case TN_EREFUSED: return "connection refused";
    case TN_ECONNECTTIMEOUT: return "connect timed out";
    case TN_EQUEUETIMEOUT: return "timed out waiting in the queue for a connection";
    case TN_ENOTLS: return "TLS (https) is not supported";
    case TN_EREDIRECTS: return "too many redirects";
    case TN_EINTERIM: return "too many interim (1xx) responses";
    case TN_ECORESUME: return "coroutine resumed at no await (an await inside a switch needs TN_CO_LABELS)";
    case TN_ETLS: return "TLS error (protocol, handshake)";
    case TN_ETLS_UNTRUSTED: return "TLS: certificate not trusted (unknown issuer)";
    case TN_ETLS_EXPIRED: return "TLS: certificate expired or not yet valid";
    case TN_ETLS_NAME: return "TLS: certificate name mismatch";
    case TN_ETLS_TIMEOUT: return "TLS: handshake timed out";
    case TN_EMALFORMED: return "malformed HTTP message";
    case TN_ETOOLARGE: return "body too large";
    case TN_EURILONG: return "request-target too long";
    case TN_EHEADERS: return "header fields too large";
    case TN_ENOTIMPL: return "not implemented";
    case TN_EVERSION: return "HTTP version not supported";
    default: break;
    }
    if (err < 0 && err > -1000) return strerror(-err);
    return "unknown error";
}

/* ------------------------------------------------------ small utilities */
/* Cursor writes into room reserved beforehand. */
TN__UNUSED static char *tn__put(char *p, const char *s, size_t n) {
    memcpy(p, s, n);
    return p + n;
}
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && \
    (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ || __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__)
/* The eight hex digits of v, most significant first, as one word in
 * memory order: the nibbles spread one per byte, then each made a digit
 * at once (+'0', +39 more for a-f), instead of a loop per digit. */
static uint64_t tn__hex8(uint32_t v) {
    uint64_t x = v;
    x = ((x & 0xFFFF0000u) << 16) | (x & 0xFFFFu);
    x = ((x & 0x0000FF000000FF00u) << 8) | (x & 0x000000FF000000FFu);
    x = ((x & 0x00F000F000F000F0u) << 4) | (x & 0x000F000F000F000Fu);
    x += 0x3030303030303030u + (((x + 0x0606060606060606u) >> 4) & 0x0101010101010101u) * 39u;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    x = __builtin_bswap64(x);
#endif
    return x;
}
#define TN__HEX_WORDS 1
#else
#define TN__HEX_WORDS 0
#endif

/* v in decimal, or in hex (lower case); no leading zeros. p needs room
 * for 20 digits (hex: 16, all written before the leading zeros go). */
TN__UNUSED static char *tn__put_u64(char *p, uint64_t v, int hex) {
    char buf[20];
    size_t i = sizeof buf;
#if TN__HEX_WORDS
    if (hex) {
        uint64_t w[2];
        size_t n = v ? (size_t)(67 - __builtin_clzll(v)) / 4 : 1;
        w[0] = tn__hex8((uint32_t)(v >> 32));
        w[1] = tn__hex8((uint32_t)v);
        memcpy(p, w, 16);
        if (n < 16) memmove(p, p + 16 - n, n);
        return p + n;
    }
#endif
    /* Two loops, so each divides by a constant (shifts, or a multiply). */
    if (hex) do {
            buf[--i] = "0123456789abcdef"[v & 15u];
            v >>= 4;
        } while (v);
    else do {
            buf[--i] = (char)('0' + (int)(v % 10u));
            v /= 10u;
        } while (v);
    return tn__put(p, buf + i, sizeof buf - i);
}

/* v as exactly 16 hex digits (lower case): an ETag, whose width need not
 * vary (no leading-zero strip, unlike tn__put_u64). */
TN__UNUSED static char *tn__put_hex16(char *p, uint64_t v) {
#if TN__HEX_WORDS
    uint64_t w[2];
    w[0] = tn__hex8((uint32_t)(v >> 32));
    w[1] = tn__hex8((uint32_t)v);
    memcpy(p, w, 16);
#else
    int i;
    for (i = 15; i >= 0; i--, v >>= 4) p[i] = "0123456789abcdef"[v & 15u];
#endif
    return p + 16;
}

TN__UNUSED static uint32_t tn__u32_le(const char *p) {
    const unsigned char *u = (const unsigned char *)p;
    return u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 | (uint32_t)u[3] << 24; /* one load at -O2 */
}
/* A fingerprint (ETags, the cache's hash), not a MAC: eight bytes a step
 * (a multiply and a shift mix each), read in little-endian order so every
 * machine gives the same value. FNV-1a, its predecessor, took a multiply
 * per byte: 5 instructions a byte of every buffered response. */
TN__UNUSED static uint64_t tn__word_le(const char *p) {
    uint64_t w;
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(&w, p, 8);
#elif defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    memcpy(&w, p, 8);
    w = __builtin_bswap64(w);
#else
    int i;
    for (w = 0, i = 7; i >= 0; i--) w = (w << 8) | (unsigned char)p[i];
#endif
    return w;
}
TN__UNUSED static uint64_t tn__hash_seeded(const char *p, size_t n, uint64_t seed) {
    const uint64_t k = 0x9E3779B97F4A7C15u;
    uint64_t h = (0x243F6A8885A308D3u ^ seed ^ ((uint64_t)n * k)) * k, w = 0;
    for (; n >= 8; p += 8, n -= 8) {
        h = (h ^ tn__word_le(p)) * k;
        h ^= h >> 31;
    }
    /* The last 0-7 bytes in two loads that may overlap, not a loop per
     * byte: for a given n (mixed in above) w still depends on each one. */
    if (n >= 4) {
        w = tn__u32_le(p) | (uint64_t)tn__u32_le(p + n - 4) << 32;
    } else if (n) {
        const unsigned char *u = (const unsigned char *)p;
        w = u[0] | (uint64_t)u[n / 2] << 8 | (uint64_t)u[n - 1] << 16;
    }
    h = (h ^ w) * k;
    h ^= h >> 29;
    h *= k;
    return h ^ (h >> 32);
}
TN__UNUSED static uint64_t tn__hash(const char *p, size_t n) { return tn__hash_seeded(p, n, 0); }
void tn_bytes_free(void *b) { tn__free(b); }

tn_bytes *tn_bytes_new_in(tn_loop *l, const void *p, size_t n) {
    (void)l; /* unused without TN_NO_MALLOC */
    tn_bytes *b = n > SIZE_MAX - sizeof(tn_bytes) ? NULL : (tn_bytes *)tn__malloc(l, sizeof(tn_bytes) + n);
    if (!b) return NULL;
    b->len = n;
    if (n) memcpy(b->data, p, n);
    b->data[n] = 0;
    return b;
}
/* Without a loop there is no region to take it from under TN_NO_MALLOC. */
tn_bytes *tn_bytes_new(const void *p, size_t n) {
#ifdef TN_NO_MALLOC
    (void)p;
    (void)n;
    return NULL;
#else
    return tn_bytes_new_in(NULL, p, n);
#endif
}

/* Grows *p (an array of elem-sized items with capacity *cap) to hold at
 * least need items, doubling. Returns 0 or TN_ENOMEM (then *p is unchanged). */
static int tn__grow(tn_loop *l, void **p, size_t *cap, size_t need, size_t elem) {
    size_t ncap;
    void *np;
    (void)l;
    if (need <= *cap) return 0;
    ncap = *cap ? *cap : 8;
    while (ncap < need) ncap *= 2;
    if (ncap > SIZE_MAX / elem) return TN_ENOMEM;
    np = tn__realloc(l, *p, ncap * elem);
    if (!np) return TN_ENOMEM;
    *p = np;
    *cap = ncap;
    return 0;
}

static char *tn__strndup(tn_loop *l, const char *s, size_t n) {
    (void)l;
    char *d = (char *)tn__malloc(l, n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

TN__UNUSED static int tn__set_nonblock_cloexec(int fd) {
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return -errno;
    fl = fcntl(fd, F_GETFD);
    if (fl < 0 || fcntl(fd, F_SETFD, fl | FD_CLOEXEC) < 0) return -errno;
    return 0;
}

static uint64_t tn__clock_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}


/* -------------------------------------------------------- loop structure */
typedef struct tn__handler {
    tn_io_fn cb;
    void *arg;
    unsigned events;
    uint32_t gen; /* 0: no handler; else the registration's generation */
} tn__handler;

/* An event collected by the backend; delivered only if the fd's handler
 * still has the generation it had when the event was collected. */
typedef struct tn__ready {
    int fd;
    uint32_t gen;
    unsigned events;
} tn__ready;

typedef struct tn__cb {
    tn_callback_fn fn;
    void *arg;
} tn__cb;

typedef struct tn__timer_slot {
    tn_callback_fn fn;
    void *arg;
    uint64_t interval_ns; /* 0: one-shot */
    uint32_t gen;         /* bumped when the slot is freed: stale handles miss */
    uint32_t next_free;   /* free-list link (slot index + 1, 0 ends) */
    uint32_t pending;
} tn__timer_slot;

typedef struct tn__heap_entry {
    uint64_t when; /* ns, monotonic */
    uint64_t seq;  /* tie-break: FIFO among equal deadlines */
    uint32_t slot;
    uint32_t gen;  /* the slot's generation when pushed: stale if it differs */
} tn__heap_entry;

#define TN__MAXSIG 65

/* TN_HTTP_MINIMAL: the server without what a device's API rarely needs. */
#ifdef TN_HTTP_MINIMAL
#define TN__MINIMAL 1
#else
#define TN__MINIMAL 0
#endif
/* Chunked bodies to decode: none when the server answers a chunked request
 * 501 (TN_HTTP_MINIMAL) and there is no client to read chunked responses;
 * then the decoder (about 1 KB of code) is not linked. */
#if defined(TN_HTTP_MINIMAL) && defined(TN_NO_HTTP_CLIENT)
#define TN__CHUNKED_IN 0
#else
#define TN__CHUNKED_IN 1
#endif

/* The streams layer, unless every part that uses it is out. */
#if !defined(TN_NO_TCP) || !defined(TN_NO_HTTP_SERVER) || !defined(TN_NO_HTTP_CLIENT)
#define TN__STREAMS 1
#else
#define TN__STREAMS 0
#endif

/* The loop is woken from elsewhere by other threads (tn_add_callback_
 * threadsafe, executor results) and, on the poll backend, by signals. */
#if !defined(TN_NO_THREADS) || (!TN__EPOLL && !defined(TN_NO_SIGNALS))
#define TN__WAKE 1
#else
#define TN__WAKE 0
#endif

typedef struct tn__be tn__be; /* the backend's state: see "backends" */
typedef struct tn__executor tn__executor;
typedef struct tn__job tn__job;
#ifndef TN_NO_SIGNALS
typedef struct tn__sig {
    tn_signal_fn fn;
    void *arg;
} tn__sig;
#endif

struct tn_loop {
    tn__be *be;
    tn__handler *handlers; /* indexed by fd */
    size_t handlers_cap, nhandlers;
    uint32_t next_gen;
    tn__ready *ready;
    size_t nready, ready_cap;

    /* callbacks: a ring */
    tn__cb *cbs;
    size_t cb_head, cb_count, cb_cap;

    /* timers: slots + binary min-heap */
    tn__timer_slot *slots;
    size_t slots_cap, slots_used;
    uint32_t free_slot; /* index + 1, 0: none */
    size_t slot_frees;  /* since the free list was last put in index order */
    tn__heap_entry *heap;
    size_t heap_len, heap_cap, timers_stale;
    uint64_t timer_seq;
    uint64_t now_ns, start_ns;

#ifndef TN_NO_THREADS
    pthread_mutex_t ts_lock;
    tn__cb *ts_cbs;
    size_t ts_count, ts_cap;
    tn__job *jobs_done; /* completed executor jobs, LIFO; reversed on drain */
    int wake_pending;
    tn__executor *executor;
    int executor_threads;
#endif
#ifndef TN_NO_SIGNALS
    tn__sig *sigs; /* TN__MAXSIG entries, allocated by the first tn_signal_add */
    int nsignals;
    void (*signals_stop)(tn_loop *l); /* set by tn_signal_add: no signal code linked without it */
#endif

    /* Callbacks that must not be lost when the ring cannot grow: future
     * dispatches and coroutine yields, linked through the objects (no
     * allocation: see tn__future_schedule), run after the ring's. */
    tn_future *overflow_head, *overflow_tail;
    tn_co *yield_head, *yield_tail;

    /* coroutines waiting in TN_WAIT_UNTIL */
    tn_co **waiters, **waiters_spare;
    size_t nwaiters, waiters_cap, waiters_spare_cap;
    int waiters_progress;

    void *future_free, *job_free; /* freed futures and executor jobs, for reuse */
    size_t nfuture_free, njob_free;
    void *buf_free; /* pooled I/O buffers, linked through their first bytes */
    size_t nbuf_free;
    void *sio_free; /* pooled stream I/O states (tn__sio), likewise */
    size_t nsio_free;
    size_t nfutures, ncoroutines, njobs, njobs_peak;
    int running, stop_requested;
#ifdef TN_NO_MALLOC
    tn__region *region; /* where everything of this loop lives, itself included */
#endif
};
#ifdef TN_NO_MALLOC
static void *tn__lmalloc(tn_loop *l, size_t n) { return tn__region_alloc(l->region, n); }
static void *tn__lrealloc(tn_loop *l, void *p, size_t n) { return tn__region_realloc(l->region, p, n); }
#endif

/* What the backends call back into (defined with the loop below). */
static int tn__handler_add_internal(tn_loop *l, int fd, tn_io_fn cb);
static void tn__handler_remove_internal(tn_loop *l, int fd);
#if TN__WAKE
static void tn__drain_threadsafe(tn_loop *l);
#endif
#ifndef TN_NO_SIGNALS
static void tn__signal_deliver(tn_loop *l, int signo);
#endif

/* -------------------------------------------------------------- backends
 * The loop knows nothing of epoll or poll. A backend is one block below:
 * its state (struct tn__be, behind l->be) and the same functions, in the
 * manner of valkey's ae:
 *   tn__be_init, tn__be_free  the poller and the wake-up channel
 *   tn__be_add, tn__be_mod, tn__be_del  an fd's interest (never empty: an
 *                             fd that wants nothing is deleted, see
 *                             tn_add_handler)
 *   tn__be_wait               wait up to timeout_ms, then append
 *                             (fd, generation, events) to l->ready
 *   tn__be_wake               from any thread: make tn__be_wait return
 *   tn__be_signal_add, tn__be_signal_del  route a signal to the loop
 *                             (delivered with tn__signal_deliver)
 *   tn__be_name, tn__be_fd
 * A third backend (kqueue, WSAPoll) is one more block.
 * ---------------------------------------------------------------------- */
#if TN__EPOLL
struct tn__be {
    int epfd;
    int wakefd; /* eventfd, or -1 */
    int sigfd;  /* signalfd once a signal is routed, else -1 */
    sigset_t sigmask;
    struct epoll_event *events;
    size_t cap;
};

#if TN__WAKE
static void tn__be_on_wake(tn_loop *l, int fd, unsigned events, void *arg) {
    uint64_t v;
    (void)events;
    (void)arg;
    while (read(fd, &v, sizeof v) > 0) {}
    tn__drain_threadsafe(l);
}
#endif

static int tn__be_init(tn_loop *l) {
    tn__be *b = (tn__be *)tn__malloc(l, sizeof *b);
    if (!b) return TN_ENOMEM;
    memset(b, 0, sizeof *b);
    b->epfd = b->wakefd = b->sigfd = -1;
    sigemptyset(&b->sigmask);
    l->be = b;
    if ((b->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0) return -errno;
#if TN__WAKE
    if ((b->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) return -errno;
    return tn__handler_add_internal(l, b->wakefd, tn__be_on_wake);
#else
    return 0;
#endif
}

static void tn__be_free(tn_loop *l) {
    tn__be *b = l->be;
    if (!b) return;
    if (b->epfd >= 0) close(b->epfd);
    if (b->wakefd >= 0) close(b->wakefd);
    tn__free(b->events);
    tn__free(b);
    l->be = NULL;
}

static int tn__be_ctl(tn_loop *l, int op, int fd, unsigned events, uint32_t gen) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = ((events & TN_READ) ? EPOLLIN : 0u) | ((events & TN_WRITE) ? EPOLLOUT : 0u);
    ev.data.u64 = ((uint64_t)gen << 32) | (uint32_t)fd;
    return epoll_ctl(l->be->epfd, op, fd, &ev) < 0 ? -errno : 0;
}
static int tn__be_add(tn_loop *l, int fd, unsigned events, uint32_t gen) {
    return tn__be_ctl(l, EPOLL_CTL_ADD, fd, events, gen);
}
static int tn__be_mod(tn_loop *l, int fd, unsigned events, uint32_t gen) {
    return tn__be_ctl(l, EPOLL_CTL_MOD, fd, events, gen);
}
static void tn__be_del(tn_loop *l, int fd) {
    struct epoll_event ev; /* non-NULL for kernels before 2.6.9 */
    /* EBADF/ENOENT are fine: the fd may already be closed. */
    (void)epoll_ctl(l->be->epfd, EPOLL_CTL_DEL, fd, &ev);
}

static int tn__be_wait(tn_loop *l, int timeout_ms) {
    tn__be *b = l->be;
    int n, i;
    size_t want = l->nhandlers + 2;
    if (want > 1024) want = 1024; /* a batch; the rest come next iteration */
    if (tn__grow(l, (void **)&b->events, &b->cap, want, sizeof *b->events)) return TN_ENOMEM;
    if (tn__grow(l, (void **)&l->ready, &l->ready_cap, want, sizeof *l->ready)) return TN_ENOMEM;
    n = epoll_wait(b->epfd, b->events, (int)want, timeout_ms);
    if (n < 0) return errno == EINTR ? 0 : -errno;
    for (i = 0; i < n; i++) {
        uint32_t e = b->events[i].events;
        tn__ready *r = &l->ready[l->nready++];
        r->fd = (int)(uint32_t)b->events[i].data.u64;
        r->gen = (uint32_t)(b->events[i].data.u64 >> 32);
        r->events = ((e & EPOLLIN) ? TN_READ : 0u) | ((e & EPOLLOUT) ? TN_WRITE : 0u) |
                    ((e & (EPOLLERR | EPOLLHUP)) ? TN_ERROR : 0u);
    }
    return 0;
}

#ifndef TN_NO_THREADS
static void tn__be_wake(tn_loop *l) {
    uint64_t one = 1;
    ssize_t r = write(l->be->wakefd, &one, sizeof one);
    (void)r; /* EAGAIN: a wake-up is already pending, which is all we need */
}
#endif

#ifndef TN_NO_SIGNALS
/* Signals are blocked and read from a signalfd, so they arrive as I/O. */
static void tn__be_on_signalfd(tn_loop *l, int fd, unsigned events, void *arg) {
    struct signalfd_siginfo si;
    (void)events;
    (void)arg;
    while (read(fd, &si, sizeof si) == (ssize_t)sizeof si) tn__signal_deliver(l, (int)si.ssi_signo);
}

static int tn__be_sigmask(int how, int signo) {
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, signo);
#ifndef TN_NO_THREADS
    return -pthread_sigmask(how, &one, NULL);
#else
    return sigprocmask(how, &one, NULL) ? -errno : 0;
#endif
}

static int tn__be_signal_add(tn_loop *l, int signo) {
    tn__be *b = l->be;
    int rc, fd;
    if ((rc = tn__be_sigmask(SIG_BLOCK, signo)) != 0) return rc;
    sigaddset(&b->sigmask, signo);
    fd = signalfd(b->sigfd, &b->sigmask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0) rc = -errno;
    else if (b->sigfd < 0 && (rc = tn__handler_add_internal(l, fd, tn__be_on_signalfd)) != 0) close(fd);
    else b->sigfd = fd;
    if (rc) {
        sigdelset(&b->sigmask, signo);
        tn__be_sigmask(SIG_UNBLOCK, signo);
    }
    return rc;
}

static void tn__be_signal_del(tn_loop *l, int signo, int last) {
    tn__be *b = l->be;
    sigdelset(&b->sigmask, signo);
    (void)signalfd(b->sigfd, &b->sigmask, SFD_NONBLOCK | SFD_CLOEXEC);
    tn__be_sigmask(SIG_UNBLOCK, signo);
    if (last) {
        tn__handler_remove_internal(l, b->sigfd);
        close(b->sigfd);
        b->sigfd = -1;
    }
}
#endif

static const char *tn__be_name(void) { return "epoll"; }
static int tn__be_fd(const tn_loop *l) { return l->be->epfd; }
#else /* the poll backend */
struct tn__be {
    struct pollfd *pfds;
    size_t n, cap;
    int *slot; /* fd -> index in pfds, -1 if none */
    size_t slot_cap;
    int wake_r, wake_w; /* the self-pipe, or -1 */
#ifndef TN_NO_SIGNALS
    struct sigaction *old; /* TN__MAXSIG saved dispositions, from the first signal */
#endif
};


#if TN__WAKE
/* Reads the self-pipe dry. A non-zero byte is a signal number written by
 * tn__be_signal_handler; zeros are wake-ups. */
static void tn__be_on_wake(tn_loop *l, int fd, unsigned events, void *arg) {
    unsigned char buf[64];
    ssize_t n, i;
    (void)events;
    (void)arg;
    while ((n = read(fd, buf, sizeof buf)) > 0) {
#ifndef TN_NO_SIGNALS
        for (i = 0; i < n; i++)
            if (buf[i]) tn__signal_deliver(l, buf[i]);
#else
        (void)i;
#endif
    }
    tn__drain_threadsafe(l);
}
#endif

static int tn__be_init(tn_loop *l) {
    tn__be *b = (tn__be *)tn__malloc(l, sizeof *b);
    if (!b) return TN_ENOMEM;
    memset(b, 0, sizeof *b);
    b->wake_r = b->wake_w = -1;
    l->be = b;
#if TN__WAKE
    {
        int p[2], rc;
        if (pipe(p) < 0) return -errno;
        b->wake_r = p[0];
        b->wake_w = p[1];
        if ((rc = tn__set_nonblock_cloexec(p[0])) || (rc = tn__set_nonblock_cloexec(p[1]))) return rc;
        return tn__handler_add_internal(l, b->wake_r, tn__be_on_wake);
    }
#else
    return 0;
#endif
}

static void tn__be_free(tn_loop *l) {
    tn__be *b = l->be;
    if (!b) return;
    if (b->wake_r >= 0) close(b->wake_r);
    if (b->wake_w >= 0) close(b->wake_w);
    tn__free(b->pfds);
    tn__free(b->slot);
#ifndef TN_NO_SIGNALS
    tn__free(b->old);
#endif
    tn__free(b);
    l->be = NULL;
}

static short tn__be_pollev(unsigned events) {
    return (short)(((events & TN_READ) ? POLLIN : 0) | ((events & TN_WRITE) ? POLLOUT : 0));
}
static int tn__be_add(tn_loop *l, int fd, unsigned events, uint32_t gen) {
    tn__be *b = l->be;
    size_t i, oldcap = b->slot_cap;
    (void)gen; /* read from the handler table at wait time */
    if (tn__grow(l, (void **)&b->slot, &b->slot_cap, (size_t)fd + 1, sizeof(int))) return TN_ENOMEM;
    for (i = oldcap; i < b->slot_cap; i++) b->slot[i] = -1;
    if (tn__grow(l, (void **)&b->pfds, &b->cap, b->n + 1, sizeof *b->pfds)) return TN_ENOMEM;
    b->slot[fd] = (int)b->n;
    b->pfds[b->n].fd = fd;
    b->pfds[b->n].events = tn__be_pollev(events);
    b->pfds[b->n].revents = 0;
    b->n++;
    return 0;
}
static int tn__be_mod(tn_loop *l, int fd, unsigned events, uint32_t gen) {
    struct pollfd *p = &l->be->pfds[l->be->slot[fd]];
    (void)gen;
    p->events = tn__be_pollev(events);
    p->revents = 0;
    return 0;
}
static void tn__be_del(tn_loop *l, int fd) {
    tn__be *b = l->be;
    int slot = b->slot[fd];
    struct pollfd *last = &b->pfds[--b->n];
    TN_ASSERT(slot >= 0);
    b->pfds[slot] = *last;
    b->slot[last->fd] = slot;
    b->slot[fd] = -1;
}

static int tn__be_wait(tn_loop *l, int timeout_ms) {
    tn__be *b = l->be;
    int n;
    size_t i;
    if (tn__grow(l, (void **)&l->ready, &l->ready_cap, b->n + 1, sizeof *l->ready)) return TN_ENOMEM;
    n = poll(b->pfds, (nfds_t)b->n, timeout_ms);
    if (n < 0) return errno == EINTR ? 0 : -errno;
    for (i = 0; i < b->n && n > 0; i++) {
        short e = b->pfds[i].revents;
        tn__ready *r;
        if (!e) continue;
        n--;
        r = &l->ready[l->nready++];
        r->fd = b->pfds[i].fd;
        r->gen = l->handlers[r->fd].gen;
        r->events = ((e & POLLIN) ? TN_READ : 0u) | ((e & POLLOUT) ? TN_WRITE : 0u) |
                    ((e & (POLLERR | POLLHUP | POLLNVAL)) ? TN_ERROR : 0u);
    }
    return 0;
}

#ifndef TN_NO_THREADS
static void tn__be_wake(tn_loop *l) {
    char c = 0;
    ssize_t r = write(l->be->wake_w, &c, 1);
    (void)r; /* EAGAIN: a wake-up is already pending, which is all we need */
}
#endif

#ifndef TN_NO_SIGNALS
/* A signal handler cannot find a loop without a global, so this is the
 * library's one piece of process-wide state (signal dispositions are
 * process-wide anyway): the self-pipe of the one loop that owns signals. */
static volatile sig_atomic_t tn__signal_wfd = -1;
static tn_loop *tn__signal_owner;

static void tn__be_signal_handler(int signo) {
    int saved = errno;
    unsigned char c = (unsigned char)signo;
    if (tn__signal_wfd >= 0) {
        ssize_t r = write((int)tn__signal_wfd, &c, 1);
        (void)r;
    }
    errno = saved;
}

static int tn__be_signal_add(tn_loop *l, int signo) {
    tn__be *b = l->be;
    struct sigaction sa;
    if (tn__signal_owner && tn__signal_owner != l) return TN_EEXIST;
    if (!b->old && !(b->old = (struct sigaction *)tn__malloc(l, TN__MAXSIG * sizeof *b->old))) return TN_ENOMEM;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = tn__be_signal_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    tn__signal_wfd = b->wake_w; /* before the handler can run */
    if (sigaction(signo, &sa, &b->old[signo]) < 0) {
        int rc = -errno;
        if (!tn__signal_owner) tn__signal_wfd = -1;
        return rc;
    }
    tn__signal_owner = l; /* only once it owns one */
    return 0;
}

static void tn__be_signal_del(tn_loop *l, int signo, int last) {
    sigaction(signo, &l->be->old[signo], NULL);
    if (last) {
        tn__signal_wfd = -1;
        tn__signal_owner = NULL;
    }
}
#endif

static const char *tn__be_name(void) { return "poll"; }
static int tn__be_fd(const tn_loop *l) {
    (void)l;
    return -1;
}
#endif /* backends */

/* ------------------------------------------------------------ fd handlers */
int tn_add_handler(tn_loop *l, int fd, unsigned events, tn_io_fn cb, void *arg) {
    size_t old_cap = l->handlers_cap;
    tn__handler *h;
    int rc;
    if (fd < 0 || !cb || (events & ~(TN_READ | TN_WRITE | TN_ERROR))) return TN_EINVAL;
    if ((size_t)fd >= l->handlers_cap) {
        if (tn__grow(l, (void **)&l->handlers, &l->handlers_cap, (size_t)fd + 1, sizeof *l->handlers))
            return TN_ENOMEM;
        memset(l->handlers + old_cap, 0, (l->handlers_cap - old_cap) * sizeof *l->handlers);
    }
    h = &l->handlers[fd];
    if (h->gen) return TN_EEXIST;
    if (++l->next_gen == 0) l->next_gen = 1;
    /* The backend holds the fd only while some event is wanted: epoll and
     * poll report a hang-up even for an empty interest set, so a paused fd
     * on a closed connection would wake the loop on every iteration. */
    if (events && (rc = tn__be_add(l, fd, events, l->next_gen)) != 0) return rc;
    h->cb = cb;
    h->arg = arg;
    h->events = events;
    h->gen = l->next_gen;
    l->nhandlers++;
    return 0;
}

int tn_update_handler(tn_loop *l, int fd, unsigned events) {
    tn__handler *h;
    int rc;
    if (fd < 0 || (size_t)fd >= l->handlers_cap || !l->handlers[fd].gen) return TN_ENOENT;
    if (events & ~(TN_READ | TN_WRITE | TN_ERROR)) return TN_EINVAL;
    h = &l->handlers[fd];
    if (h->events == events) return 0; /* no syscall when nothing changes */
    if (!events) {
        tn__be_del(l, fd); /* paused: see tn_add_handler */
    } else if ((rc = (h->events ? tn__be_mod : tn__be_add)(l, fd, events, h->gen)) != 0) {
        return rc;
    }
    h->events = events;
    return 0;
}

int tn_remove_handler(tn_loop *l, int fd) {
    if (fd < 0 || (size_t)fd >= l->handlers_cap || !l->handlers[fd].gen) return TN_ENOENT;
    if (l->handlers[fd].events) tn__be_del(l, fd);
    l->handlers[fd].gen = 0; /* any collected event for it is now stale */
    l->handlers[fd].cb = NULL;
    l->nhandlers--;
    return 0;
}

/* The loop's own fds (wake-up, signalfd) are not the user's: stats.handlers
 * counts the user's only. */
TN__UNUSED static int tn__handler_add_internal(tn_loop *l, int fd, tn_io_fn cb) {
    int rc = tn_add_handler(l, fd, TN_READ, cb, NULL);
    if (rc == 0) l->nhandlers--;
    return rc;
}
TN__UNUSED static void tn__handler_remove_internal(tn_loop *l, int fd) { /* not every backend */
    l->nhandlers++;
    tn_remove_handler(l, fd);
}

/* -------------------------------------------------------------- callbacks */
int tn_add_callback(tn_loop *l, tn_callback_fn fn, void *arg) {
    size_t tail;
    if (l->cb_count == l->cb_cap) {
        /* Grow and unwrap the ring so it stays contiguous from cb_head. */
        size_t ncap = l->cb_cap ? l->cb_cap * 2 : 64, i; /* a power of two: masks, not % */
        tn__cb *n = (tn__cb *)tn__malloc(l, ncap * sizeof *n);
        if (!n) return TN_ENOMEM;
        for (i = 0; i < l->cb_count; i++) n[i] = l->cbs[(l->cb_head + i) & (l->cb_cap - 1)];
        tn__free(l->cbs);
        l->cbs = n;
        l->cb_cap = ncap;
        l->cb_head = 0;
    }
    tail = (l->cb_head + l->cb_count) & (l->cb_cap - 1);
    l->cbs[tail].fn = fn;
    l->cbs[tail].arg = arg;
    l->cb_count++;
    return 0;
}

#ifndef TN_NO_THREADS

int tn_add_callback_threadsafe(tn_loop *l, tn_callback_fn fn, void *arg) {
    int wake;
    pthread_mutex_lock(&l->ts_lock);
    if (tn__grow(l, (void **)&l->ts_cbs, &l->ts_cap, l->ts_count + 1, sizeof *l->ts_cbs)) {
        pthread_mutex_unlock(&l->ts_lock);
        return TN_ENOMEM;
    }
    l->ts_cbs[l->ts_count].fn = fn;
    l->ts_cbs[l->ts_count].arg = arg;
    l->ts_count++;
    wake = !l->wake_pending;
    l->wake_pending = 1;
    pthread_mutex_unlock(&l->ts_lock);
    if (wake) tn__be_wake(l);
    return 0;
}
#else
int tn_add_callback_threadsafe(tn_loop *l, tn_callback_fn fn, void *arg) {
    return tn_add_callback(l, fn, arg);
}
#endif

/* ----------------------------------------------------------------- timers */
/* A binary min-heap of (deadline, sequence, slot, generation). Cancelling
 * is lazy, as in asyncio: it frees the slot (bumping its generation) and
 * leaves the heap entry to be skipped when it reaches the top, so sifting
 * never writes back into the slots (random memory at a million timers) and
 * cancel is O(1). When stale entries outnumber live ones, the heap is
 * rebuilt without them. */
#define TN__HEAP_LESS(a, b) ((a).when < (b).when || ((a).when == (b).when && (a).seq < (b).seq))

static void tn__heap_up(tn_loop *l, size_t i) {
    tn__heap_entry e = l->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!TN__HEAP_LESS(e, l->heap[parent])) break;
        l->heap[i] = l->heap[parent];
        i = parent;
    }
    l->heap[i] = e;
}

static void tn__heap_down(tn_loop *l, size_t i) {
    tn__heap_entry e = l->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= l->heap_len) break;
        if (c + 1 < l->heap_len && TN__HEAP_LESS(l->heap[c + 1], l->heap[c])) c++;
        if (!TN__HEAP_LESS(l->heap[c], e)) break;
        l->heap[i] = l->heap[c];
        i = c;
    }
    l->heap[i] = e;
}

static void tn__heap_pop(tn_loop *l) {
    l->heap[0] = l->heap[--l->heap_len];
    if (l->heap_len) tn__heap_down(l, 0);
}

static int tn__heap_push(tn_loop *l, uint32_t slot, uint64_t when) {
    tn__heap_entry e;
    if (tn__grow(l, (void **)&l->heap, &l->heap_cap, l->heap_len + 1, sizeof *l->heap)) return TN_ENOMEM;
    e.when = when;
    e.seq = l->timer_seq++;
    e.slot = slot;
    e.gen = l->slots[slot].gen;
    l->heap[l->heap_len++] = e;
    tn__heap_up(l, l->heap_len - 1);
    l->slots[slot].pending = 1;
    return 0;
}

#define TN__HEAP_STALE(l, e) ((l)->slots[(e).slot].gen != (e).gen)

/* Drops cancelled entries from the top, so heap[0] is a live timer. */
static void tn__heap_prune_top(tn_loop *l) {
    while (l->heap_len && TN__HEAP_STALE(l, l->heap[0])) {
        tn__heap_pop(l);
        l->timers_stale--;
    }
}

/* Rebuilds the heap without its cancelled entries: O(n). */
static void tn__heap_compact(tn_loop *l) {
    size_t i, n = 0;
    for (i = 0; i < l->heap_len; i++)
        if (!TN__HEAP_STALE(l, l->heap[i])) l->heap[n++] = l->heap[i];
    l->heap_len = n;
    l->timers_stale = 0;
    for (i = n / 2; i-- > 0;) tn__heap_down(l, i);
}

/* Threads every free slot (fn NULL) onto the free list, lowest index
 * first. Timers fire in deadline order, so a LIFO free list hands slots
 * out in random memory order after a while: every new timer then writes
 * a cold cache line. When a timer starts after frees of half as many
 * slots as there are, the list is rebuilt in index order first: O(slots)
 * per slots/2 frees, O(1) amortized, and new timers fill memory in order
 * (the lowest free slots first) again. */
static void tn__slots_relink(tn_loop *l) {
    size_t i;
    l->free_slot = 0;
    for (i = l->slots_cap; i > 0; i--)
        if (!l->slots[i - 1].fn) {
            l->slots[i - 1].next_free = l->free_slot;
            l->free_slot = (uint32_t)i;
        }
    l->slot_frees = 0;
}

static void tn__slot_free(tn_loop *l, uint32_t slot) {
    tn__timer_slot *s = &l->slots[slot];
    if (s->pending) l->timers_stale++; /* its heap entry is now stale */
    s->pending = 0;
    s->fn = NULL;
    if (++s->gen == 0) s->gen = 1;
    s->next_free = l->free_slot;
    l->free_slot = slot + 1;
    l->slots_used--;
    l->slot_frees++;
}

static int tn__timer_start(tn_loop *l, uint64_t when_ns, uint64_t interval_ns, tn_callback_fn fn,
                           void *arg, tn_timer *out) {
    uint32_t slot;
    tn__timer_slot *s;
    if (!fn) return TN_EINVAL;
    if (!l->free_slot) {
        size_t old = l->slots_cap, i;
        if (old >= UINT32_MAX - 1) return TN_ENOMEM;
        if (tn__grow(l, (void **)&l->slots, &l->slots_cap, old + 1, sizeof *l->slots)) return TN_ENOMEM;
        /* Thread the new slots onto the free list, lowest index first. */
        for (i = l->slots_cap; i > old; i--) {
            l->slots[i - 1].gen = 1;
            l->slots[i - 1].pending = 0;
            l->slots[i - 1].fn = NULL;
            l->slots[i - 1].next_free = l->free_slot;
            l->free_slot = (uint32_t)i;
        }
    }
    if (l->timers_stale > 1024 && l->timers_stale > l->heap_len / 2) tn__heap_compact(l);
    if (l->slot_frees >= l->slots_cap / 2 && l->slots_cap >= 4096) tn__slots_relink(l);
    slot = l->free_slot - 1;
    s = &l->slots[slot];
    if (tn__heap_push(l, slot, when_ns)) return TN_ENOMEM;
    l->free_slot = s->next_free;
    l->slots_used++;
    s->fn = fn;
    s->arg = arg;
    s->interval_ns = interval_ns;
    if (out) *out = ((uint64_t)s->gen << 32) | (uint64_t)(slot + 1);
    return 0;
}

int tn_call_later(tn_loop *l, uint64_t delay_ms, tn_callback_fn fn, void *arg, tn_timer *out) {
    if (delay_ms > UINT64_MAX / 2000000u) return TN_EINVAL;
    return tn__timer_start(l, l->now_ns + delay_ms * 1000000u, 0, fn, arg, out);
}

int tn_call_at(tn_loop *l, uint64_t when_ms, tn_callback_fn fn, void *arg, tn_timer *out) {
    if (when_ms > UINT64_MAX / 2000000u) return TN_EINVAL;
    return tn__timer_start(l, l->start_ns + when_ms * 1000000u, 0, fn, arg, out);
}

int tn_call_every(tn_loop *l, uint64_t interval_ms, tn_callback_fn fn, void *arg, tn_timer *out) {
    if (interval_ms == 0 || interval_ms > UINT64_MAX / 2000000u) return TN_EINVAL;
    return tn__timer_start(l, l->now_ns + interval_ms * 1000000u, interval_ms * 1000000u, fn, arg,
                           out);
}

int tn_cancel_timer(tn_loop *l, tn_timer t) {
    uint32_t slot = (uint32_t)(t & 0xffffffffu), gen = (uint32_t)(t >> 32);
    tn__timer_slot *s;
    if (slot == 0 || slot > l->slots_cap) return TN_ENOENT;
    s = &l->slots[slot - 1];
    if (s->gen != gen || !s->fn) return TN_ENOENT;
    tn__slot_free(l, slot - 1);
    return 0;
}

uint64_t tn_time_ms(const tn_loop *l) { return (l->now_ns - l->start_ns) / 1000000u; }

/* Runs the timers due now that were scheduled before this pass began, so a
 * timer that schedules a zero-delay timer cannot starve I/O. */
static void tn__run_timers(tn_loop *l) {
    uint64_t seq_limit = l->timer_seq;
    for (;;) {
        uint32_t slot, gen;
        uint64_t when;
        tn__timer_slot *s;
        tn_callback_fn fn;
        void *arg;
        tn__heap_prune_top(l);
        if (!l->heap_len || l->heap[0].when > l->now_ns || l->heap[0].seq >= seq_limit) break;
        slot = l->heap[0].slot;
        when = l->heap[0].when;
        s = &l->slots[slot];
        fn = s->fn;
        arg = s->arg;
        gen = s->gen;
        tn__heap_pop(l);
        s->pending = 0;
        if (s->interval_ns) {
            /* Re-arm before the call (so the callback may cancel it) at the
             * next multiple of the interval after now: a late run skips the
             * missed ones instead of bunching them up. */
            uint64_t iv = s->interval_ns;
            uint64_t next = when + iv;
            if (next <= l->now_ns) next += ((l->now_ns - next) / iv + 1) * iv;
            if (tn__heap_push(l, slot, next)) { /* out of memory: it stops */
                tn__slot_free(l, slot);
            }
        }
        fn(l, arg);
        /* The callback may have cancelled the timer, whose slot may even have
         * been reused: only a one-shot that is still ours is freed here. */
        s = &l->slots[slot];
        if (s->gen == gen && s->fn && !s->pending && !s->interval_ns) tn__slot_free(l, slot);
    }
}

/* ---------------------------------------------------------------- signals
 * The table of handlers is the loop's; how a signal reaches the loop is the
 * backend's (a signalfd, or a handler writing to the self-pipe). */
#ifndef TN_NO_SIGNALS
static void tn__signal_deliver(tn_loop *l, int signo) {
    if (l->sigs && signo > 0 && signo < TN__MAXSIG && l->sigs[signo].fn)
        l->sigs[signo].fn(l, signo, l->sigs[signo].arg);
}

/* tn_loop_free's: every handler removed, the backend's signal state undone. */
static void tn__signals_stop(tn_loop *l) {
    int s;
    for (s = 1; s < TN__MAXSIG && l->nsignals; s++)
        if (l->sigs[s].fn) tn_signal_remove(l, s);
}

int tn_signal_add(tn_loop *l, int signo, tn_signal_fn fn, void *arg) {
    int rc;
    if (signo <= 0 || signo >= TN__MAXSIG || !fn || signo == SIGKILL || signo == SIGSTOP) return TN_EINVAL;
    if (!l->sigs) {
        if (!(l->sigs = (tn__sig *)tn__malloc(l, TN__MAXSIG * sizeof *l->sigs))) return TN_ENOMEM;
        memset(l->sigs, 0, TN__MAXSIG * sizeof *l->sigs);
    }
    if (l->sigs[signo].fn) return TN_EEXIST;
    if ((rc = tn__be_signal_add(l, signo)) != 0) return rc;
    l->sigs[signo].fn = fn;
    l->sigs[signo].arg = arg;
    l->nsignals++;
    l->signals_stop = tn__signals_stop;
    return 0;
}

int tn_signal_remove(tn_loop *l, int signo) {
    if (!l->sigs || signo <= 0 || signo >= TN__MAXSIG || !l->sigs[signo].fn) return TN_ENOENT;
    l->sigs[signo].fn = NULL;
    l->nsignals--;
    tn__be_signal_del(l, signo, l->nsignals == 0);
    return 0;
}
#endif

/* ------------------------------------------------------- loop lifecycle */
static void tn__executor_free(tn_loop *l);
static void tn__executor_flush(tn_loop *l);
static void tn__drop_callbacks(tn_loop *l);

/* Frees a list linked through each block's first bytes. */
static void tn__free_list(void **head) {
    while (*head) {
        void *next = *(void **)*head;
        tn__free(*head);
        *head = next;
    }
}
#if TN__STREAMS
static void tn__bufpool_free(tn_loop *l);
#endif

int tn_loop_new(tn_loop **out, const tn_loop_opts *opts) {
    tn_loop *l;
    int rc;
    *out = NULL;
#ifdef TN_NO_MALLOC
    {
        /* The loop is the region's first block; a region too small for
         * that (or none) is a mistake of the caller's, not a shortage. */
        tn__region *r = opts ? tn__region_init(opts->heap, opts->heap_size) : NULL;
        if (!r) return TN_EINVAL;
        if (!(l = (tn_loop *)tn__region_alloc(r, sizeof *l))) {
            tn__region_destroy(r);
            return TN_EINVAL;
        }
        memset(l, 0, sizeof *l);
        l->region = r;
    }
#else
    if (opts && opts->heap) return TN_ENOTSUP; /* a region is for TN_NO_MALLOC builds */
    l = (tn_loop *)TN_MALLOC(sizeof *l);
    if (!l) return TN_ENOMEM;
    memset(l, 0, sizeof *l);
#endif
    l->start_ns = l->now_ns = tn__clock_ns();
#ifndef TN_NO_THREADS
    l->executor_threads = (opts && opts->executor_threads > 0) ? opts->executor_threads : TN_EXECUTOR_THREADS;
    if (pthread_mutex_init(&l->ts_lock, NULL)) {
        tn__free(l);
        return TN_ENOMEM;
    }
#else
    (void)opts;
#endif
    if ((rc = tn__be_init(l)) != 0) {
        tn_loop_free(l);
        return rc;
    }
    *out = l;
    return 0;
}

void tn_loop_free(tn_loop *l) {
    if (!l) return;
#ifndef TN_NO_SIGNALS
    if (l->nsignals) l->signals_stop(l);
    tn__free(l->sigs);
#endif
    tn__executor_free(l);
    tn__drop_callbacks(l);
    tn__be_free(l);
#ifndef TN_NO_THREADS
    tn__free(l->ts_cbs);
    pthread_mutex_destroy(&l->ts_lock);
#endif
    tn__free(l->handlers);
    tn__free(l->ready);
    tn__free(l->cbs);
    tn__free(l->slots);
    tn__free(l->heap);
    tn__free(l->waiters);
    tn__free(l->waiters_spare);
#if TN__STREAMS
    tn__bufpool_free(l);
#endif
    tn__free_list(&l->future_free);
    tn__free_list(&l->job_free);
#ifdef TN_NO_MALLOC
    {
        tn__region *r = l->region;
        tn__free(l);
        tn__region_destroy(r);
    }
#else
    tn__free(l);
#endif
}

const char *tn_loop_backend(const tn_loop *l) {
    (void)l;
    return tn__be_name();
}
int tn_loop_fd(const tn_loop *l) { return tn__be_fd(l); }

void tn_loop_get_stats(const tn_loop *l, tn_loop_stats *o) {
    o->handlers = l->nhandlers;
    o->timers = l->slots_used;
    o->callbacks = l->cb_count;
    o->futures = l->nfutures;
    o->coroutines = l->ncoroutines;
    o->jobs = l->njobs;
#ifdef TN_NO_MALLOC
    tn__region_lock(l->region); /* executor threads may be freeing */
    o->region_used = l->region->used;
    o->region_peak = (size_t)(l->region->top - l->region->base);
    tn__region_unlock(l->region);
#else
    o->region_used = o->region_peak = 0;
#endif
}

/* ----------------------------------------------------------- iteration */
static void tn__future_dispatch(tn_loop *l, void *arg);
static void tn__co_yield_cb(tn_loop *l, void *arg);
static tn_future *tn__overflow_next(tn_future *f);

static void tn__run_callbacks(tn_loop *l) {
    /* Only those queued before this pass: a callback that re-queues itself
     * runs once per iteration, and I/O is never starved. */
    size_t n = l->cb_count;
    tn_future *f = l->overflow_head;
    tn_co *co = l->yield_head;
    l->overflow_head = l->overflow_tail = NULL;
    l->yield_head = l->yield_tail = NULL;
    while (n--) {
        tn__cb c = l->cbs[l->cb_head];
        l->cb_head = (l->cb_head + 1) & (l->cb_cap - 1);
        l->cb_count--;
        c.fn(l, c.arg);
    }
    while (f) {
        tn_future *next = tn__overflow_next(f);
        tn__future_dispatch(l, f);
        f = next;
    }
    while (co) {
        tn_co *next = (tn_co *)co->value;
        co->value = NULL;
        tn__co_yield_cb(l, co);
        co = next;
    }
}

static void tn__run_waiters(tn_loop *l);

int tn_loop_next_timeout(tn_loop *l) {
    uint64_t now, delta;
    if (l->cb_count || l->overflow_head || l->yield_head || l->waiters_progress || l->stop_requested) return 0;
    tn__heap_prune_top(l);
    if (!l->heap_len) return -1;
    now = tn__clock_ns();
    if (l->heap[0].when <= now) return 0;
    /* Round up: waking a little late is harmless, early costs a spin. */
    delta = (l->heap[0].when - now + 999999u) / 1000000u;
    return delta > INT_MAX ? INT_MAX : (int)delta;
}

int tn_loop_step(tn_loop *l, int max_wait_ms) {
    int timeout, rc;
    size_t i;
    l->now_ns = tn__clock_ns();
    tn__run_callbacks(l);
    tn__run_timers(l);
    tn__run_waiters(l);
    timeout = tn_loop_next_timeout(l);
    if (max_wait_ms >= 0 && (timeout < 0 || timeout > max_wait_ms)) timeout = max_wait_ms;
    l->nready = 0;
    tn__executor_flush(l); /* the jobs held back this turn: to the workers before we sleep */
    rc = tn__be_wait(l, timeout);
    l->now_ns = tn__clock_ns();
    for (i = 0; i < l->nready; i++) {
        tn__ready r = l->ready[i];
        tn__handler *h;
        if ((size_t)r.fd >= l->handlers_cap) continue;
        h = &l->handlers[r.fd];
        unsigned ev;
        /* Removed (or removed and re-added) since the event was collected:
         * the event belongs to an fd that no longer exists for us. */
        if (h->gen != r.gen || !h->cb) continue;
        /* And only what it still asks for: a callback earlier in this batch
         * may have paused it (or turned writing off). */
        if (!h->events || !(ev = r.events & (h->events | TN_ERROR))) continue;
        h->cb(l, r.fd, ev, h->arg);
    }
    l->nready = 0;
    return rc;
}

int tn_loop_run(tn_loop *l) {
    int rc = 0;
    if (l->running) return TN_ESTATE;
    l->running = 1;
    while (!l->stop_requested) {
        rc = tn_loop_step(l, -1);
        if (rc && rc != TN_ENOMEM) break; /* out of memory: retry next turn */
        rc = 0;
    }
    l->stop_requested = 0;
    l->running = 0;
    return rc;
}

void tn_loop_stop(tn_loop *l) { l->stop_requested = 1; }
/* --------------------------------------------------------------- futures */
#define TN__F_DONE 1u
#define TN__F_PRODUCER 2u /* producer's part still held */
#define TN__F_CONSUMER 4u /* consumer's part still held */
#define TN__F_DISPATCH 8u /* done callback queued on the loop */
#define TN__F_TAKEN 16u   /* value handed to the consumer */
#define TN__F_SETTLES_OWN_CANCEL 32u /* cancel asks; the producer completes it */
#define TN__F_CANCEL_ASKED 64u

struct tn_future {
    tn_loop *loop;
    void *value;
    tn_free_fn free_value;
    tn_future_fn done_fn, cancel_fn;
    void *done_arg, *cancel_arg;
    uint64_t aux; /* for the library's own producers: a timer handle */
    int err;
    unsigned flags;
};

static tn_future *tn__overflow_next(tn_future *f) { return (tn_future *)f->cancel_arg; }

tn_future *tn_future_new(tn_loop *l) {
    tn_future *f = (tn_future *)l->future_free;
    if (f) { /* reuse: futures come and go at the rate of awaits */
        l->future_free = *(void **)f;
        l->nfuture_free--;
    } else if (!(f = (tn_future *)tn__malloc(l, sizeof *f))) {
        return NULL;
    }
    memset(f, 0, sizeof *f);
    f->loop = l;
    f->flags = TN__F_PRODUCER | TN__F_CONSUMER;
    l->nfutures++;
    return f;
}

static void tn__future_maybe_free(tn_future *f);

/* Both parts at once, for a future made just now whose other allocation
 * failed: nobody will ever see it. */
static void tn__future_abandon(tn_future *f) {
    tn_future_fail(f, TN_ENOMEM);
    tn_future_release(f);
}

static void tn__future_maybe_free(tn_future *f) {
    tn_loop *l = f->loop;
    if (f->flags & (TN__F_PRODUCER | TN__F_CONSUMER | TN__F_DISPATCH)) return;
    if (f->value && f->free_value && !(f->flags & TN__F_TAKEN)) f->free_value(f->value);
    l->nfutures--;
    /* "n + 1 <=": with the limit 0 (sanitizer builds), "n < 0" is a
     * -Wtype-limits error under -Werror. Each executor job has a future, and
     * how many jobs are in flight is the application's choice (see
     * tn__job_recycle): their futures are kept too, else a burst of 20,000
     * jobs spent half the loop thread's instructions in malloc and free. */
    if (l->nfuture_free + 1 <= TN_FREE_LIST_MAX + (TN_FREE_LIST_MAX ? l->njobs_peak : 0)) {
        *(void **)f = l->future_free; /* overwrites f->loop: read it first */
        l->future_free = f;
        l->nfuture_free++;
        return;
    }
    tn__free(f);
}

static void tn__future_dispatch(tn_loop *l, void *arg) {
    tn_future *f = (tn_future *)arg;
    tn_future_fn fn = f->done_fn;
    (void)l;
    f->flags &= ~TN__F_DISPATCH;
    f->done_fn = NULL;
    if (fn && (f->flags & TN__F_CONSUMER)) fn(f, f->done_arg);
    else tn__future_maybe_free(f);
}

/* At tn_loop_free: pending callbacks are dropped, but a queued future
 * dispatch holds the future alive, so let it go (without calling the done
 * callback) and the future frees itself if both its parts have ended. */
static void tn__drop_callbacks(tn_loop *l) {
    while (l->overflow_head) {
        tn_future *f = l->overflow_head;
        l->overflow_head = tn__overflow_next(f);
        f->flags &= ~TN__F_DISPATCH;
        f->done_fn = NULL;
        tn__future_maybe_free(f);
    }
    l->overflow_tail = NULL;
    l->yield_head = l->yield_tail = NULL; /* frames are their owners' (see tn_loop_free) */
    while (l->cb_count) {
        tn__cb c = l->cbs[l->cb_head];
        l->cb_head = (l->cb_head + 1) & (l->cb_cap - 1);
        l->cb_count--;
        if (c.fn == tn__future_dispatch) {
            tn_future *f = (tn_future *)c.arg;
            f->flags &= ~TN__F_DISPATCH;
            f->done_fn = NULL;
            tn__future_maybe_free(f);
        }
    }
}

/* Queues the done callback. Running it on a later iteration, never inside
 * resolve, means a producer never finds itself re-entered by its consumer. */
static void tn__future_schedule(tn_future *f) {
    if (!f->done_fn || (f->flags & TN__F_DISPATCH)) return;
    if (tn_add_callback(f->loop, tn__future_dispatch, f) != 0) {
        /* The ring could not grow: the dispatch must not be lost (its
         * consumer would wait forever), so it queues through the future
         * itself. A done future has no use for its cancel hook. */
        tn_loop *l = f->loop;
        f->cancel_fn = NULL;
        f->cancel_arg = NULL;
        if (l->overflow_tail) l->overflow_tail->cancel_arg = f;
        else l->overflow_head = f;
        l->overflow_tail = f;
    }
    f->flags |= TN__F_DISPATCH;
}

static int tn__future_complete(tn_future *f, int err, void *value, tn_free_fn free_value) {
    if (!(f->flags & TN__F_PRODUCER)) return TN_ESTATE;
    f->flags &= ~TN__F_PRODUCER;
    if (f->flags & TN__F_DONE) {
        /* Cancelled before we got here: nobody will ever read this value. */
        if (value && free_value) free_value(value);
        tn__future_maybe_free(f);
        return TN_ECANCELLED;
    }
    f->flags |= TN__F_DONE;
    f->err = err;
    f->value = value;
    f->free_value = free_value;
    tn__future_schedule(f);
    tn__future_maybe_free(f);
    return 0;
}

int tn_future_resolve(tn_future *f, void *value) { return tn__future_complete(f, 0, value, NULL); }
int tn_future_resolve_owned(tn_future *f, void *value, tn_free_fn free_value) {
    return tn__future_complete(f, 0, value, free_value);
}
int tn_future_fail(tn_future *f, int err) {
    return tn__future_complete(f, err < 0 ? err : TN_EINVAL, NULL, NULL);
}

void tn_future_on_cancel(tn_future *f, tn_future_fn fn, void *arg) {
    f->cancel_fn = fn;
    f->cancel_arg = arg;
}

int tn_future_on_done(tn_future *f, tn_future_fn fn, void *arg) {
    if (f->done_fn) return TN_EEXIST;
    f->done_fn = fn;
    f->done_arg = arg;
    if (f->flags & TN__F_DONE) tn__future_schedule(f);
    return 0;
}

int tn_future_cancel(tn_future *f) {
    tn_future_fn fn = f->cancel_fn;
    void *fn_arg = f->cancel_arg; /* read now: once done, the field links the overflow list */
    if (f->flags & TN__F_DONE) return TN_ESTATE;
    if (f->flags & TN__F_SETTLES_OWN_CANCEL) {
        /* A coroutine's future: like asyncio's Task.cancel, this asks the
         * coroutine to stop (its await returns TN_ECANCELLED) and the future
         * completes when the coroutine has ended, so nobody frees what the
         * coroutine still uses while it unwinds. */
        if (f->flags & TN__F_CANCEL_ASKED) return 0;
        f->flags |= TN__F_CANCEL_ASKED;
        if (fn) fn(f, f->cancel_arg);
        return 0;
    }
    f->flags |= TN__F_DONE;
    f->err = TN_ECANCELLED;
    f->cancel_fn = NULL;
    tn__future_schedule(f);
    /* The producer still holds its part, so f stays valid during fn. */
    if (fn) fn(f, fn_arg);
    return 0;
}

void tn_future_release(tn_future *f) {
    if (!f) return;
    f->flags &= ~TN__F_CONSUMER;
    f->done_fn = NULL;
    tn__future_maybe_free(f);
}

int tn_future_done(const tn_future *f) { return (f->flags & TN__F_DONE) != 0; }
int tn_future_error(const tn_future *f) { return (f->flags & TN__F_DONE) ? f->err : TN_ESTATE; }
void *tn_future_value(const tn_future *f) { return (f->flags & TN__F_TAKEN) ? NULL : f->value; }
void *tn_future_take(tn_future *f) {
    if (!(f->flags & TN__F_DONE) || (f->flags & TN__F_TAKEN)) return NULL;
    f->flags |= TN__F_TAKEN;
    return f->value;
}

/* ----------------------------------------------------------- combinators */
/* tn_all / tn_any share one record: the inputs, and the output future. */
typedef struct tn__multi tn__multi;
/* Each input's done callback gets its own record, so it knows its index
 * without a search (tn_all over n futures stays O(n), not O(n^2)). */
typedef struct tn__multi_in {
    tn_future *f;
    tn__multi *m;
} tn__multi_in;

struct tn__multi {
    tn_future *out;
    tn__multi_in *ins;
    void **values;
    tn_settled *settled; /* tn_all_settled: every input's outcome */
    size_t *index;
    size_t n, pending;
    int any, finished;
};

static void tn__multi_free(tn__multi *m) {
    size_t i;
    for (i = 0; i < m->n; i++) tn_future_release(m->ins[i].f);
    tn__free(m->ins);
    tn__free(m);
}

/* The output was cancelled by its consumer: cancel every input. */
static void tn__multi_cancelled(tn_future *out, void *arg) {
    tn__multi *m = (tn__multi *)arg;
    size_t i;
    (void)out;
    m->finished = 1;
    for (i = 0; i < m->n; i++) tn_future_cancel(m->ins[i].f);
    tn_future_fail(m->out, TN_ECANCELLED); /* ends our producer part */
    m->out = NULL;
}

static void tn__multi_input_done(tn_future *f, void *arg) {
    tn__multi_in *in = (tn__multi_in *)arg;
    tn__multi *m = in->m;
    size_t i, which = (size_t)(in - m->ins);
    int err = tn_future_error(f);
    m->pending--;
    if (m->settled) { /* tn_all_settled: no input ends it early */
        if (!m->finished) { /* after a cancel results[] may be gone: untouched */
            m->settled[which].err = err;
            m->settled[which].value = err ? NULL : tn_future_take(f);
        }
        if (m->pending == 0 && !m->finished) {
            m->finished = 1;
            tn_future_resolve(m->out, NULL);
            m->out = NULL;
        }
    } else if (!m->finished) {
        if (err || m->any) {
            m->finished = 1;
            for (i = 0; i < m->n; i++)
                if (i != which) tn_future_cancel(m->ins[i].f);
            if (m->any && m->index) *m->index = which;
            if (err) tn_future_fail(m->out, err);
            else tn_future_resolve_owned(m->out, tn_future_take(f), f->free_value);
            m->out = NULL;
        } else if (m->pending == 0) {
            m->finished = 1;
            if (m->values)
                for (i = 0; i < m->n; i++) m->values[i] = tn_future_take(m->ins[i].f);
            tn_future_resolve(m->out, NULL);
            m->out = NULL;
        }
    }
    if (m->pending == 0) tn__multi_free(m);
}

static tn_future *tn__multi_new(tn_loop *l, tn_future **fs, size_t n, int any, void **values,
                                size_t *index, tn_settled *settled) {
    tn__multi *m = (tn__multi *)tn__malloc(l, sizeof *m);
    tn_future *out = tn_future_new(l);
    size_t i;
    int missing = 0;
    for (i = 0; i < n; i++) missing |= fs[i] == NULL; /* an input that failed to allocate */
    if (m) m->ins = NULL;
    if (!m || !out || missing || (n && !(m->ins = (tn__multi_in *)tn__malloc(l, n * sizeof *m->ins)))) {
        for (i = 0; i < n; i++) {
            if (!fs[i]) continue;
            tn_future_cancel(fs[i]);
            tn_future_release(fs[i]);
        }
        if (out) {
            tn__future_abandon(out);
        }
        if (m) tn__free(m->ins);
        tn__free(m);
        return NULL;
    }
    m->out = out;
    m->n = m->pending = n;
    m->values = values;
    m->settled = settled;
    m->index = index;
    m->any = any;
    m->finished = 0;
    if (n == 0) {
        tn__free(m);
        if (any) tn_future_fail(out, TN_EINVAL);
        else tn_future_resolve(out, NULL);
        return out;
    }
    for (i = 0; i < n; i++) {
        m->ins[i].f = fs[i];
        m->ins[i].m = m;
        tn_future_on_done(fs[i], tn__multi_input_done, &m->ins[i]);
    }
    tn_future_on_cancel(out, tn__multi_cancelled, m);
    return out;
}

tn_future *tn_all(tn_loop *l, tn_future **fs, size_t n, void **values) {
    return tn__multi_new(l, fs, n, 0, values, NULL, NULL);
}
tn_future *tn_any(tn_loop *l, tn_future **fs, size_t n, size_t *index) {
    return tn__multi_new(l, fs, n, 1, NULL, index, NULL);
}
tn_future *tn_all_settled(tn_loop *l, tn_future **fs, size_t n, tn_settled *results) {
    size_t i;
    if (!results) return tn_all(l, fs, n, NULL);
    for (i = 0; i < n; i++) {
        results[i].err = TN_ECANCELLED;
        results[i].value = NULL;
    }
    return tn__multi_new(l, fs, n, 0, NULL, NULL, results);
}

/* sleep: a future and a timer that point at each other. */
static void tn__sleep_fire(tn_loop *l, void *arg) {
    (void)l;
    tn_future_resolve((tn_future *)arg, NULL);
}
static void tn__sleep_cancelled(tn_future *f, void *arg) {
    (void)arg;
    tn_cancel_timer(f->loop, (tn_timer)f->aux);
    tn_future_fail(f, TN_ECANCELLED); /* the timer's producer part ends */
}

tn_future *tn_sleep(tn_loop *l, uint64_t ms) {
    tn_future *f = tn_future_new(l);
    tn_timer t;
    if (!f) return NULL;
    if (tn_call_later(l, ms, tn__sleep_fire, f, &t)) {
        tn__future_abandon(f);
        return NULL;
    }
    f->aux = t;
    tn_future_on_cancel(f, tn__sleep_cancelled, NULL);
    return f;
}

/* with_timeout: the output, the input, and a timer; whichever of the input
 * and the timer finishes first settles the output and stops the other. */
typedef struct tn__timeout {
    tn_future *out, *in;
    tn_timer timer;
} tn__timeout;

static void tn__timeout_in_done(tn_future *in, void *arg) {
    tn__timeout *t = (tn__timeout *)arg;
    if (t->out) {
        int err = tn_future_error(in);
        tn_cancel_timer(in->loop, t->timer);
        if (err) tn_future_fail(t->out, err);
        else tn_future_resolve_owned(t->out, tn_future_take(in), in->free_value);
    }
    tn_future_release(in);
    tn__free(t);
}

static void tn__timeout_fire(tn_loop *l, void *arg) {
    tn__timeout *t = (tn__timeout *)arg;
    tn_future *out = t->out;
    (void)l;
    /* The input completed before its deadline came up, but its done callback
     * has not run yet (it runs on a later iteration): that callback settles
     * out with the result. Timing out here would throw a completed result
     * away (a queue item, an executor result) and call it a timeout. */
    if (tn_future_done(t->in)) return;
    t->out = NULL;
    tn_future_fail(out, TN_ETIMEOUT);
    tn_future_cancel(t->in); /* its done callback frees t */
}

static void tn__timeout_out_cancelled(tn_future *out, void *arg) {
    tn__timeout *t = (tn__timeout *)arg;
    t->out = NULL;
    tn_cancel_timer(out->loop, t->timer);
    tn_future_fail(out, TN_ECANCELLED);
    tn_future_cancel(t->in);
}

tn_future *tn_with_timeout(tn_loop *l, tn_future *in, uint64_t timeout_ms) {
    tn__timeout *t;
    if (!in) return NULL; /* the input itself failed to allocate */
    t = (tn__timeout *)tn__malloc(l, sizeof *t);
    tn_future *out = tn_future_new(l);
    if (!t || !out || tn_call_later(l, timeout_ms, tn__timeout_fire, t, &t->timer)) {
        if (out) {
            tn__future_abandon(out);
        }
        tn__free(t);
        tn_future_cancel(in);
        tn_future_release(in);
        return NULL;
    }
    t->out = out;
    t->in = in;
    tn_future_on_done(in, tn__timeout_in_done, t);
    tn_future_on_cancel(out, tn__timeout_out_cancelled, t);
    return out;
}

/* run_sync's done callback. It also stops the loop, because the iteration
 * that runs it would otherwise go on to block in poll with nothing left to
 * wake it (1: a stop was already requested, and stays; 2: the stop is ours,
 * run_sync clears it). */
static void tn__run_sync_done(tn_future *f, void *arg) {
    *(int *)arg = f->loop->stop_requested ? 1 : 2;
    f->loop->stop_requested = 1;
}

int tn_run_sync(tn_loop *l, tn_future *f, uint64_t timeout_ms, void **value) {
    uint64_t deadline;
    int err, fired = 0, own_cb, timed_out = 0;
    if (!f) return TN_ENOMEM;
    if (l->running) {
        tn_future_release(f);
        return TN_ESTATE;
    }
    /* From the real clock: the cached one is as old as the last iteration,
     * and a loop left idle for longer than timeout_ms would otherwise time
     * out before running anything. */
    deadline = tn__clock_ns() + timeout_ms * 1000000u;
    /* Wait for f's done callback rather than poll tn_future_done(f): when f
     * completed inside an iteration, that iteration blocked in poll (-1 when
     * there is no timeout) with nothing left to wake it: run_sync hung. The
     * queued callback keeps that poll from blocking, and stops the next. */
    own_cb = tn_future_on_done(f, tn__run_sync_done, &fired) == 0;
    l->running = 1;
    while (own_cb ? !fired : !tn_future_done(f)) {
        int wait = -1;
        if (timeout_ms) {
            uint64_t now = tn__clock_ns();
            if (now >= deadline) {
                timed_out = 1;
                break;
            }
            wait = (int)((deadline - now + 999999u) / 1000000u);
        }
        err = tn_loop_step(l, wait);
        if (err && err != TN_ENOMEM) break;
    }
    l->running = 0;
    if (fired == 2) l->stop_requested = 0;
    if (own_cb) f->done_fn = NULL; /* its arg is this frame: never call it later */
    if (!tn_future_done(f)) tn_future_cancel(f);
    /* A coroutine's future completes only once the coroutine has unwound,
     * which needs the loop: report the cancel ourselves. */
    err = tn_future_done(f) ? tn_future_error(f) : TN_ECANCELLED;
    if (err == TN_ECANCELLED && timed_out) err = TN_ETIMEOUT;
    if (value) *value = err ? NULL : tn_future_take(f);
    tn_future_release(f);
    return err;
}

/* ------------------------------------------------------------ coroutines */
#define TN__CO_OWNED 1u     /* frame from tn_co_new: freed at the end */
#define TN__CO_CANCELLED 2u /* matches TN_CANCELLED() */
#define TN__CO_WAITING 4u   /* on the TN_WAIT_UNTIL list */
#define TN__CO_CANCEL_PENDING 8u /* cancelled, not yet delivered to an await */

/* 1 (and it is delivered now) if a cancellation waits to be delivered. */
int tn__co_take_cancel(tn_co *co) {
    if (!(co->flags & TN__CO_CANCEL_PENDING)) return 0;
    co->flags &= ~TN__CO_CANCEL_PENDING;
    return 1;
}

void *tn_co_new(tn_loop *l, size_t size) {
    tn_co *co;
    if (size < sizeof(tn_co)) return NULL;
    co = (tn_co *)tn__malloc(l, size);
    if (!co) return NULL;
    memset(co, 0, size);
    co->loop = l;
    co->flags = TN__CO_OWNED;
    return co;
}

/* Runs the body once; frees the frame when it has ended (then returns 1,
 * and co must not be touched). */
static int tn__co_step(tn_co *co) {
    tn_loop *l = co->loop;
    if (co->fn(co) != TN_CO_DONE) return 0;
    l->ncoroutines--;
    if (co->flags & TN__CO_OWNED) tn__free(co);
    return 1;
}

static void tn__co_cancelled(tn_future *f, void *arg) {
    tn_co *co = (tn_co *)arg;
    (void)f;
    co->flags |= TN__CO_CANCELLED | TN__CO_CANCEL_PENDING;
    /* Cancellation reaches the coroutine at its await: cancelling what it
     * awaits makes it resume now, with TN_ECANCELLED (see tn__co_on_done).
     * A yield or a wait resumes by itself. */
    if (co->awaiting) tn_future_cancel(co->awaiting);
}

tn_future *tn_spawn(tn_loop *l, tn_co *co, tn_co_fn fn) {
    tn_future *f;
    if (!co) return NULL; /* a failed tn_co_new passed straight in */
    f = tn_future_new(l);
    if (!f) {
        if (co->flags & TN__CO_OWNED) tn__free(co);
        return NULL;
    }
    co->loop = l;
    co->fn = fn;
    co->done = f;
    co->awaiting = NULL;
    co->lc.label = NULL;
    co->lc.line = 0;
    co->flags &= TN__CO_OWNED;
    l->ncoroutines++;
    f->flags |= TN__F_SETTLES_OWN_CANCEL;
    tn_future_on_cancel(f, tn__co_cancelled, co);
    /* The consumer's part is the caller's: tn__co_step may end the producer's
     * part now, but f lives until the caller lets it go. */
    tn__co_step(co);
    return f;
}

/* The await's outcome: f's, unless a cancellation waits to be delivered
 * (then f's value, if any, stays with f, which frees an owned one). */
static void tn__co_settle_await(tn_co *co, tn_future *f) {
    co->err = tn__co_take_cancel(co) ? TN_ECANCELLED : tn_future_error(f);
    co->value = co->err ? NULL : tn_future_take(f);
    tn_future_release(f);
}

static void tn__co_on_done(tn_future *f, void *arg) {
    tn_co *co = (tn_co *)arg;
    co->awaiting = NULL;
    tn__co_settle_await(co, f);
    tn__co_step(co);
}

int tn__co_await(tn_co *co, tn_future *f) {
    if (!f) {
        co->err = tn__co_take_cancel(co) ? TN_ECANCELLED : TN_ENOMEM;
        co->value = NULL;
        return 1;
    }
    if (tn_future_done(f)) {
        /* Already done: continue at once, as awaiting a done asyncio future
         * does. The future's own done callback rule is unaffected. */
        tn__co_settle_await(co, f);
        return 1;
    }
    co->awaiting = f;
    tn_future_on_done(f, tn__co_on_done, co);
    /* Cancelled while not awaiting (in a yield, or before the first
     * await): this is the await that delivers it, so stop f now. */
    if (co->flags & TN__CO_CANCEL_PENDING) tn_future_cancel(f);
    return 0;
}

static void tn__co_yield_cb(tn_loop *l, void *arg) {
    tn_co *co = (tn_co *)arg;
    (void)l;
    co->err = tn__co_take_cancel(co) ? TN_ECANCELLED : 0;
    co->value = NULL;
    tn__co_step(co);
}

void tn__co_yield(tn_co *co) {
    if (tn_add_callback(co->loop, tn__co_yield_cb, co)) {
        /* The ring could not grow: waiting for memory here would wait
         * forever (nothing else runs on this thread), so the coroutine
         * queues through its frame (co->value is unused until it resumes). */
        tn_loop *l = co->loop;
        co->value = NULL;
        if (l->yield_tail) l->yield_tail->value = co;
        else l->yield_head = co;
        l->yield_tail = co;
    }
}

int tn__co_wait(tn_co *co) {
    tn_loop *l = co->loop;
    if (!(co->flags & TN__CO_WAITING)) {
        if (tn__grow(l, (void **)&l->waiters, &l->waiters_cap, l->nwaiters + 1, sizeof *l->waiters)) {
            tn__co_yield(co); /* no room on the list: poll on the next turn */
            return TN_CO_WAITING;
        }
        l->waiters[l->nwaiters++] = co;
        co->flags |= TN__CO_WAITING;
    }
    return TN_CO_WAITING;
}

/* Re-checks every TN_WAIT_UNTIL once. The list is swapped out first, so a
 * coroutine whose condition still fails re-adds itself (to the fresh list)
 * and one whose condition holds goes on and is simply not re-added. If any
 * went on, the next poll does not block: what it did may make another
 * condition true. */
static void tn__run_waiters(tn_loop *l) {
    tn_co **list = l->waiters;
    size_t n = l->nwaiters, i, cap = l->waiters_cap;
    l->waiters_progress = 0;
    if (!n) return;
    l->waiters = l->waiters_spare;
    l->waiters_cap = l->waiters_spare_cap;
    l->nwaiters = 0;
    for (i = 0; i < n; i++) {
        tn_co *co = list[i];
        co->flags &= ~TN__CO_WAITING;
        if (tn__co_step(co) || !(co->flags & TN__CO_WAITING)) l->waiters_progress = 1;
    }
    l->waiters_spare = list;
    l->waiters_spare_cap = cap;
}

int tn__co_return(tn_co *co, int err, void *value, tn_free_fn free_value) {
    tn_future *f = co->done;
    co->done = NULL;
    if (f->flags & TN__F_CANCEL_ASKED) { /* cancelled: it stays cancelled */
        if (value && free_value) free_value(value);
        err = TN_ECANCELLED;
    }
    if (err) tn_future_fail(f, err);
    else tn_future_resolve_owned(f, value, free_value);
    return TN_CO_DONE;
}
/* -------------------------------------------------------------- executor */
struct tn__job {
    tn_work_fn fn;
    void *arg, *result;
    tn_free_fn free_arg, free_result;
    tn_future *f;
    tn__job *next;
    int err;
};

/* The pool needs threads; without them (or without the executor: only the
 * connector's name lookups use it then) work runs inline, on the loop. */
#if !defined(TN_NO_THREADS) && !defined(TN_NO_EXECUTOR)
#define TN__POOL 1
#else
#define TN__POOL 0
#endif

#if TN__POOL
/* The job's end on the loop thread: its arg goes, and its future completes
 * (a cancelled one fails, whatever fn returned). */
static void tn__job_settle(tn__job *j) {
    if (j->free_arg) j->free_arg(j->arg);
    if (j->err || (j->f->flags & TN__F_CANCEL_ASKED)) {
        if (j->result && j->free_result) j->free_result(j->result);
        tn_future_fail(j->f, j->err && !(j->f->flags & TN__F_CANCEL_ASKED) ? j->err : TN_ECANCELLED);
    } else {
        tn_future_resolve_owned(j->f, j->result, j->free_result);
    }
}

struct tn__executor {
    tn_loop *loop;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    tn__job *head, *tail; /* queued, FIFO */
    /* Submitted while every worker was taken (see tn_run_in_executor_owned),
     * the loop thread's alone (no lock): handed to the queue in one lock
     * before the loop waits (tn__executor_flush). */
    tn__job *lhead, *ltail;
    int nlocal, saturated; /* saturated: the loop thread's hint, reset each turn */
    pthread_t *threads;
    int nthreads, shutdown;
    int idle;    /* workers in their wait */
    int waking;  /* of those, signalled and not yet back: a burst signals each once */
    int running; /* workers between taking a job and asking for the next */
    /* What the loop calls (tn__executor_flush, _free, the drain): set by
     * tn__executor_start, so a program that submits no job links no pool. */
    void (*hand_over)(tn_loop *l);
    void (*stop)(tn_loop *l);
    void (*complete)(tn_loop *l, tn__job *done);
};
static void tn__executor_hand_over(tn_loop *l);
static void tn__executor_stop(tn_loop *l);
static void tn__jobs_complete(tn_loop *l, tn__job *done);
static void tn__executor_free(tn_loop *l) {
    if (l->executor) l->executor->stop(l);
}
static void tn__executor_flush(tn_loop *l) {
    if (l->executor) l->executor->hand_over(l);
}

/* Jobs are made and dropped on the loop thread only, so a plain free list
 * serves them (two mallocs per round trip were half its cost). It keeps
 * as many as were ever in flight at once (at least TN_FREE_LIST_MAX): the
 * application, not a peer, decides how many jobs it submits, and a burst
 * of them otherwise paid malloc and free for all but the first 1024, which
 * tripled the round trip. TN_FREE_LIST_MAX 0 keeps none. */
static void tn__job_recycle(tn_loop *l, tn__job *j) {
    size_t keep = l->njobs_peak > TN_FREE_LIST_MAX ? l->njobs_peak : TN_FREE_LIST_MAX;
    if (TN_FREE_LIST_MAX == 0) keep = 0;
    if (l->njob_free + 1 <= keep) { /* not "<": see tn__future_maybe_free */
        *(void **)j = l->job_free;
        l->job_free = j;
        l->njob_free++;
    } else {
        tn__free(j);
    }
}

static void *tn__worker(void *arg) {
    tn__executor *ex = (tn__executor *)arg;
    tn_loop *l = ex->loop;
    int ran = 0;
    for (;;) {
        tn__job *j;
        int wake;
        pthread_mutex_lock(&ex->lock);
        ex->running -= ran;
        ran = 1;
        while (!ex->head && !ex->shutdown) {
            ex->idle++;
            pthread_cond_wait(&ex->cond, &ex->lock);
            ex->idle--;
            if (ex->waking) ex->waking--; /* a spurious wake may take another's: then one more signal */
        }
        if (!ex->head) { /* shutdown and nothing left */
            pthread_mutex_unlock(&ex->lock);
            return NULL;
        }
        j = ex->head;
        ex->head = j->next;
        if (!ex->head) ex->tail = NULL;
        ex->running++;
        pthread_mutex_unlock(&ex->lock);

        j->result = NULL;
        j->err = j->fn(j->arg, &j->result);

        /* Hand the job back to the loop thread; only it touches futures. */
        pthread_mutex_lock(&l->ts_lock);
        j->next = l->jobs_done;
        l->jobs_done = j;
        wake = !l->wake_pending;
        l->wake_pending = 1;
        pthread_mutex_unlock(&l->ts_lock);
        if (wake) tn__be_wake(l);
    }
}

static int tn__executor_start(tn_loop *l) {
    tn__executor *ex = (tn__executor *)tn__malloc(l, sizeof *ex);
    sigset_t all, old;
    int i;
    if (!ex) return TN_ENOMEM;
    memset(ex, 0, sizeof *ex);
    ex->loop = l;
    ex->hand_over = tn__executor_hand_over;
    ex->stop = tn__executor_stop;
    ex->complete = tn__jobs_complete;
    ex->threads = (pthread_t *)tn__malloc(l, (size_t)l->executor_threads * sizeof(pthread_t));
    if (!ex->threads || pthread_mutex_init(&ex->lock, NULL)) {
        tn__free(ex->threads);
        tn__free(ex);
        return TN_ENOMEM;
    }
    pthread_cond_init(&ex->cond, NULL);
    /* Workers block every signal, so signals reach the loop's thread. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (i = 0; i < l->executor_threads; i++) {
        if (pthread_create(&ex->threads[i], NULL, tn__worker, ex)) break;
        ex->nthreads++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    l->executor = ex;
    if (ex->nthreads == 0) {
        tn__executor_free(l);
        return -EAGAIN;
    }
    return 0;
}

/* Takes j out of the list head..tail; 0 when it is not there. */
static int tn__job_unlink(tn__job **head, tn__job **tail, tn__job *j) {
    tn__job **pp, *prev = NULL;
    for (pp = head; *pp; prev = *pp, pp = &(*pp)->next) {
        if (*pp != j) continue;
        *pp = j->next;
        if (*tail == j) *tail = prev;
        return 1;
    }
    return 0;
}

/* Appends the jobs held back this turn to the workers' queue (lock held);
 * returns how many they were. */
static int tn__executor_splice(tn__executor *ex) {
    int n = ex->nlocal;
    if (!ex->lhead) return 0;
    if (ex->tail) ex->tail->next = ex->lhead;
    else ex->head = ex->lhead;
    ex->tail = ex->ltail;
    ex->lhead = ex->ltail = NULL;
    ex->nlocal = 0;
    return n;
}

static void tn__job_cancelled(tn_future *f, void *arg) {
    tn__job *j = (tn__job *)arg;
    tn__executor *ex = f->loop->executor;
    int queued;
    if (tn__job_unlink(&ex->lhead, &ex->ltail, j)) { /* the loop's own: no lock */
        ex->nlocal--; /* not handed over yet: the workers never saw it */
        queued = 1;
    } else {
        pthread_mutex_lock(&ex->lock);
        queued = tn__job_unlink(&ex->head, &ex->tail, j); /* else taken by a worker */
        pthread_mutex_unlock(&ex->lock);
    }
    /* Running: it finishes on its own (its future is settled then, failed,
     * and its result freed): see tn__jobs_complete. */
    if (!queued) return;
    j->err = TN_ECANCELLED;
    tn__job_settle(j);
    f->loop->njobs--;
    tn__job_recycle(f->loop, j);
}

static void tn__jobs_complete(tn_loop *l, tn__job *done) {
    tn__job *rev = NULL;
    while (done) { /* the list is LIFO; deliver in completion order */
        tn__job *n = done->next;
        done->next = rev;
        rev = done;
        done = n;
    }
    while (rev) {
        tn__job *j = rev;
        rev = j->next;
        tn__job_settle(j);
        l->njobs--;
        tn__job_recycle(l, j);
    }
}

tn_future *tn_run_in_executor_owned(tn_loop *l, tn_work_fn fn, void *arg, tn_free_fn free_arg,
                                    tn_free_fn free_result) {
    tn__job *j;
    tn_future *f = tn_future_new(l);
    tn__executor *ex;
    int rc;
    if (!f) {
        if (free_arg) free_arg(arg);
        return NULL;
    }
    if (!l->executor && (rc = tn__executor_start(l)) != 0) {
        if (free_arg) free_arg(arg);
        if (rc == TN_ENOMEM) {
            tn__future_abandon(f);
            return NULL;
        }
        tn_future_fail(f, rc); /* no thread could start */
        return f;
    }
    ex = l->executor;
    if ((j = (tn__job *)l->job_free) != NULL) {
        l->job_free = *(void **)j;
        l->njob_free--;
    } else if (!(j = (tn__job *)tn__malloc(l, sizeof *j))) {
        if (free_arg) free_arg(arg);
        tn__future_abandon(f);
        return NULL;
    }
    memset(j, 0, sizeof *j);
    j->fn = fn;
    j->arg = arg;
    j->free_arg = free_arg;
    j->free_result = free_result;
    j->f = f;
    f->flags |= TN__F_SETTLES_OWN_CANCEL; /* a running job is settled when it ends */
    tn_future_on_cancel(f, tn__job_cancelled, j);
    if (++l->njobs > l->njobs_peak) l->njobs_peak = l->njobs;
    /* Every worker taken (running, or woken for a job already queued): this
     * job could not start now anyway, so it waits with the turn's others
     * for one hand-over (tn__executor_flush) instead of a lock of its own.
     * The hint is as of this turn's last locked submit; a worker freed
     * since then takes the job when the loop next waits. */
    if (ex->saturated) {
        if (ex->ltail) ex->ltail->next = j;
        else ex->lhead = j;
        ex->ltail = j;
        ex->nlocal++;
        return f;
    }
    pthread_mutex_lock(&ex->lock);
    if (ex->tail) ex->tail->next = j;
    else ex->head = j;
    ex->tail = j;
    /* A busy worker takes the job when it is done with its own, so only a
     * waiting one is woken (libuv's rule), and each only once: not again
     * while it has not yet got the CPU. */
    if (ex->idle > ex->waking) {
        ex->waking++;
        pthread_cond_signal(&ex->cond);
    }
    ex->saturated = ex->running + ex->waking >= ex->nthreads;
    pthread_mutex_unlock(&ex->lock);
    return f;
}

/* Hands the jobs held back this turn to the workers in one lock: 20,000
 * submitted by one callback took 20,000 locks, each contended by the
 * workers, before. */
static void tn__executor_hand_over(tn_loop *l) {
    tn__executor *ex = l->executor;
    int n;
    ex->saturated = 0;
    if (!ex->lhead) return;
    pthread_mutex_lock(&ex->lock);
    for (n = tn__executor_splice(ex); n > 0 && ex->idle > ex->waking; n--) {
        ex->waking++;
        pthread_cond_signal(&ex->cond);
    }
    pthread_mutex_unlock(&ex->lock);
}

/* Queued jobs are cancelled; running ones are waited for (a thread cannot be
 * stopped safely), then every result is delivered or freed. */
static void tn__executor_stop(tn_loop *l) {
    tn__executor *ex = l->executor;
    tn__job *q;
    int i;
    pthread_mutex_lock(&ex->lock);
    tn__executor_splice(ex); /* not yet handed over: cancelled below with the queued */
    q = ex->head;
    ex->head = ex->tail = NULL;
    ex->shutdown = 1;
    pthread_cond_broadcast(&ex->cond);
    pthread_mutex_unlock(&ex->lock);
    for (i = 0; i < ex->nthreads; i++) pthread_join(ex->threads[i], NULL);
    while (q) {
        tn__job *n = q->next;
        q->err = TN_ECANCELLED; /* dropped without running */
        tn__job_settle(q);
        l->njobs--;
        tn__free(q);
        q = n;
    }
    tn__jobs_complete(l, l->jobs_done);
    l->jobs_done = NULL;
    pthread_cond_destroy(&ex->cond);
    pthread_mutex_destroy(&ex->lock);
    tn__free(ex->threads);
    tn__free(ex);
    l->executor = NULL;
}

static void tn__drain_threadsafe(tn_loop *l) {
    tn__cb *cbs;
    size_t n, cap, i;
    tn__job *done;
    pthread_mutex_lock(&l->ts_lock);
    cbs = l->ts_cbs;
    n = l->ts_count;
    cap = l->ts_cap;
    l->ts_cbs = NULL;
    l->ts_count = l->ts_cap = 0;
    done = l->jobs_done;
    l->jobs_done = NULL;
    l->wake_pending = 0;
    pthread_mutex_unlock(&l->ts_lock);
    (void)cap;
    for (i = 0; i < n; i++)
        if (tn_add_callback(l, cbs[i].fn, cbs[i].arg)) cbs[i].fn(l, cbs[i].arg); /* no room: run now */
    tn__free(cbs);
    if (done && l->executor) l->executor->complete(l, done); /* only a started pool has jobs */
}
#else
/* Work on the loop's thread, at once (it blocks the loop meanwhile). */
TN__UNUSED static tn_future *tn__work_inline(tn_loop *l, tn_work_fn fn, void *arg, tn_free_fn free_arg, tn_free_fn free_result) {
    tn_future *f = tn_future_new(l);
    void *result = NULL;
    int err;
    if (!f) {
        if (free_arg) free_arg(arg);
        return NULL;
    }
    err = fn(arg, &result);
    if (free_arg) free_arg(arg);
    if (err) {
        if (result && free_result) free_result(result);
        tn_future_fail(f, err);
    } else {
        tn_future_resolve_owned(f, result, free_result);
    }
    return f;
}
static void tn__executor_free(tn_loop *l) { (void)l; }
static void tn__executor_flush(tn_loop *l) { (void)l; }
#ifndef TN_NO_THREADS /* (TN_NO_EXECUTOR) the thread-safe callbacks only */
static void tn__drain_threadsafe(tn_loop *l) {
    tn__cb *cbs;
    size_t n, i;
    pthread_mutex_lock(&l->ts_lock);
    cbs = l->ts_cbs;
    n = l->ts_count;
    l->ts_cbs = NULL;
    l->ts_count = l->ts_cap = 0;
    l->wake_pending = 0;
    pthread_mutex_unlock(&l->ts_lock);
    for (i = 0; i < n; i++)
        if (tn_add_callback(l, cbs[i].fn, cbs[i].arg)) cbs[i].fn(l, cbs[i].arg);
    tn__free(cbs);
}
#elif TN__WAKE
static void tn__drain_threadsafe(tn_loop *l) { (void)l; }
#endif
#ifndef TN_NO_EXECUTOR
tn_future *tn_run_in_executor_owned(tn_loop *l, tn_work_fn fn, void *arg, tn_free_fn free_arg,
                                    tn_free_fn free_result) {
    return tn__work_inline(l, fn, arg, free_arg, free_result);
}
#endif
#endif

#ifndef TN_NO_EXECUTOR
tn_future *tn_run_in_executor(tn_loop *l, tn_work_fn fn, void *arg, tn_free_fn free_result) {
    return tn_run_in_executor_owned(l, fn, arg, NULL, free_result);
}
/* Blocking work off the loop, for the library's own use (name lookups). */
#define tn__offload(l, fn, arg, free_result) tn_run_in_executor(l, fn, arg, free_result)
#else
#define tn__offload(l, fn, arg, free_result) tn__work_inline(l, fn, arg, NULL, free_result)
#endif
/* ---------------------------------------------------------- Event, Queue */
/* A FIFO of waiting futures (each with an item, for queue putters). The
 * waiter's future is produced by the Event/Queue; its cancel hook takes it
 * off the list at once, so a cancelled get never swallows an item. */
typedef struct tn__waiter {
    tn_future *f;
    void *item;
} tn__waiter;

typedef struct tn__waitlist {
    tn__waiter *w;
    size_t head, n, cap; /* live entries: w[head .. head+n) */
} tn__waitlist;

static int tn__waitlist_push(tn__waitlist *wl, tn_future *f, void *item) {
    if (wl->head + wl->n == wl->cap && wl->head) { /* slide down before growing */
        memmove(wl->w, wl->w + wl->head, wl->n * sizeof *wl->w);
        wl->head = 0;
    }
    if (tn__grow(f->loop, (void **)&wl->w, &wl->cap, wl->head + wl->n + 1, sizeof *wl->w)) return TN_ENOMEM;
    wl->w[wl->head + wl->n].f = f;
    wl->w[wl->head + wl->n].item = item;
    wl->n++;
    return 0;
}

static tn__waiter tn__waitlist_pop(tn__waitlist *wl) {
    tn__waiter w = wl->w[wl->head++];
    if (--wl->n == 0) wl->head = 0;
    return w;
}

static void tn__waitlist_remove(tn__waitlist *wl, tn_future *f) {
    size_t i;
    for (i = wl->head; i < wl->head + wl->n; i++) {
        if (wl->w[i].f != f) continue;
        memmove(wl->w + i, wl->w + i + 1, (wl->head + wl->n - i - 1) * sizeof *wl->w);
        if (--wl->n == 0) wl->head = 0;
        return;
    }
}

/* Fails every waiter (on free). */
static void tn__waitlist_fail_all(tn__waitlist *wl, int err) {
    while (wl->n) {
        tn__waiter w = tn__waitlist_pop(wl);
        tn_future_on_cancel(w.f, NULL, NULL);
        tn_future_fail(w.f, err);
    }
    tn__free(wl->w);
    wl->w = NULL;
    wl->cap = 0;
}

/* A pending future registered on wl, whose cancellation removes it. */
static tn_future *tn__waitlist_wait(tn_loop *l, tn__waitlist *wl, void *item, tn_future_fn on_cancel,
                                    void *owner) {
    tn_future *f = tn_future_new(l);
    if (!f) return NULL;
    if (tn__waitlist_push(wl, f, item)) {
        tn__future_abandon(f);
        return NULL;
    }
    tn_future_on_cancel(f, on_cancel, owner);
    return f;
}

static tn_future *tn__future_resolved(tn_loop *l, void *value) {
    tn_future *f = tn_future_new(l);
    if (f) tn_future_resolve(f, value);
    return f;
}

struct tn_event {
    tn_loop *loop;
    tn__waitlist waiters;
    int set;
};

tn_event *tn_event_new(tn_loop *l) {
    tn_event *ev = (tn_event *)tn__malloc(l, sizeof *ev);
    if (!ev) return NULL;
    memset(ev, 0, sizeof *ev);
    ev->loop = l;
    return ev;
}

void tn_event_free(tn_event *ev) {
    if (!ev) return;
    tn__waitlist_fail_all(&ev->waiters, TN_ECANCELLED);
    tn__free(ev);
}

void tn_event_set(tn_event *ev) {
    ev->set = 1;
    while (ev->waiters.n) {
        tn__waiter w = tn__waitlist_pop(&ev->waiters);
        tn_future_on_cancel(w.f, NULL, NULL);
        tn_future_resolve(w.f, NULL);
    }
}
void tn_event_clear(tn_event *ev) { ev->set = 0; }
int tn_event_is_set(const tn_event *ev) { return ev->set; }

static void tn__event_wait_cancelled(tn_future *f, void *arg) {
    tn__waitlist_remove(&((tn_event *)arg)->waiters, f);
    tn_future_fail(f, TN_ECANCELLED);
}

tn_future *tn_event_wait(tn_event *ev) {
    if (ev->set) return tn__future_resolved(ev->loop, NULL);
    return tn__waitlist_wait(ev->loop, &ev->waiters, NULL, tn__event_wait_cancelled, ev);
}

struct tn_queue {
    tn_loop *loop;
    void **items; /* ring */
    size_t head, n, cap, maxsize, unfinished;
    tn__waitlist getters, putters, joiners;
};

tn_queue *tn_queue_new(tn_loop *l, size_t maxsize) {
    tn_queue *q = (tn_queue *)tn__malloc(l, sizeof *q);
    if (!q) return NULL;
    memset(q, 0, sizeof *q);
    q->loop = l;
    q->maxsize = maxsize;
    return q;
}

void tn_queue_free(tn_queue *q) {
    if (!q) return;
    tn__waitlist_fail_all(&q->getters, TN_ECANCELLED);
    tn__waitlist_fail_all(&q->putters, TN_ECANCELLED);
    tn__waitlist_fail_all(&q->joiners, TN_ECANCELLED);
    tn__free(q->items);
    tn__free(q);
}

size_t tn_queue_size(const tn_queue *q) { return q->n; }

static int tn__queue_push(tn_queue *q, void *item) {
    if (q->n == q->cap) {
        size_t ncap = q->cap ? q->cap * 2 : 16, i;
        void **ni = (void **)tn__malloc(q->loop, ncap * sizeof *ni);
        if (!ni) return TN_ENOMEM;
        for (i = 0; i < q->n; i++) ni[i] = q->items[(q->head + i) % q->cap];
        tn__free(q->items);
        q->items = ni;
        q->cap = ncap;
        q->head = 0;
    }
    q->items[(q->head + q->n) % q->cap] = item;
    q->n++;
    return 0;
}

static void *tn__queue_shift(tn_queue *q) {
    void *item = q->items[q->head];
    q->head = (q->head + 1) % q->cap;
    q->n--;
    return item;
}

/* Accepts an item: straight to the oldest getter if one waits. */
static int tn__queue_accept(tn_queue *q, void *item) {
    if (q->getters.n) {
        tn__waiter g = tn__waitlist_pop(&q->getters);
        tn_future_on_cancel(g.f, NULL, NULL);
        tn_future_resolve(g.f, item);
    } else if (tn__queue_push(q, item)) {
        return TN_ENOMEM;
    }
    q->unfinished++;
    return 0;
}

int tn_queue_try_put(tn_queue *q, void *item) {
    if (q->maxsize && q->n >= q->maxsize) return TN_EFULL;
    return tn__queue_accept(q, item);
}

static void tn__queue_put_cancelled(tn_future *f, void *arg) {
    tn__waitlist_remove(&((tn_queue *)arg)->putters, f);
    tn_future_fail(f, TN_ECANCELLED);
}
static void tn__queue_get_cancelled(tn_future *f, void *arg) {
    tn__waitlist_remove(&((tn_queue *)arg)->getters, f);
    tn_future_fail(f, TN_ECANCELLED);
}
static void tn__queue_join_cancelled(tn_future *f, void *arg) {
    tn__waitlist_remove(&((tn_queue *)arg)->joiners, f);
    tn_future_fail(f, TN_ECANCELLED);
}

tn_future *tn_queue_put(tn_queue *q, void *item) {
    int rc = tn_queue_try_put(q, item);
    if (rc == 0) return tn__future_resolved(q->loop, NULL);
    if (rc != TN_EFULL) return NULL;
    return tn__waitlist_wait(q->loop, &q->putters, item, tn__queue_put_cancelled, q);
}

int tn_queue_try_get(tn_queue *q, void **item) {
    if (!q->n) return TN_EEMPTY;
    *item = tn__queue_shift(q);
    /* Room was made: the oldest blocked putter's item goes in. */
    if (q->putters.n) {
        tn__waiter p = tn__waitlist_pop(&q->putters);
        tn__queue_push(q, p.item); /* cannot fail: a slot was just freed */
        q->unfinished++;
        tn_future_on_cancel(p.f, NULL, NULL);
        tn_future_resolve(p.f, NULL);
    }
    return 0;
}

tn_future *tn_queue_get(tn_queue *q) {
    void *item;
    if (tn_queue_try_get(q, &item) == 0) return tn__future_resolved(q->loop, item);
    return tn__waitlist_wait(q->loop, &q->getters, NULL, tn__queue_get_cancelled, q);
}

int tn_queue_task_done(tn_queue *q) {
    if (!q->unfinished) return TN_ESTATE;
    if (--q->unfinished == 0) {
        while (q->joiners.n) {
            tn__waiter w = tn__waitlist_pop(&q->joiners);
            tn_future_on_cancel(w.f, NULL, NULL);
            tn_future_resolve(w.f, NULL);
        }
    }
    return 0;
}

tn_future *tn_queue_join(tn_queue *q) {
    if (!q->unfinished) return tn__future_resolved(q->loop, NULL);
    return tn__waitlist_wait(q->loop, &q->joiners, NULL, tn__queue_join_cancelled, q);
}

/* wait_fd: a future over one readiness event of an fd (how a
 * non-blocking C driver, libpq or hiredis say, plugs into the loop). */
typedef struct tn__fdwait {
    tn_future *f;
    int fd;
    int timer_armed;
    tn_timer timer;
} tn__fdwait;

static void tn__fdwait_end(tn__fdwait *w, int err, unsigned events) {
    tn_loop *l = w->f->loop;
    tn_future *f = w->f;
    tn_remove_handler(l, w->fd);
    if (w->timer_armed) tn_cancel_timer(l, w->timer);
    tn__free(w);
    if (err) tn_future_fail(f, err);
    else tn_future_resolve(f, (void *)(uintptr_t)events);
}
static void tn__fdwait_io(tn_loop *l, int fd, unsigned events, void *arg) {
    (void)l;
    (void)fd;
    tn__fdwait_end((tn__fdwait *)arg, 0, events);
}
static void tn__fdwait_timeout(tn_loop *l, void *arg) {
    (void)l;
    ((tn__fdwait *)arg)->timer_armed = 0;
    tn__fdwait_end((tn__fdwait *)arg, TN_ETIMEOUT, 0);
}
static void tn__fdwait_cancelled(tn_future *f, void *arg) {
    (void)f;
    tn__fdwait_end((tn__fdwait *)arg, TN_ECANCELLED, 0);
}

tn_future *tn_wait_fd(tn_loop *l, int fd, unsigned events, unsigned timeout_ms) {
    tn_future *f = tn_future_new(l);
    tn__fdwait *w;
    int rc;
    if (!f) return NULL;
    if (!(w = (tn__fdwait *)tn__malloc(l, sizeof *w))) {
        tn__future_abandon(f);
        return NULL;
    }
    memset(w, 0, sizeof *w);
    w->f = f;
    w->fd = fd;
    if (!events || (events & ~(TN_READ | TN_WRITE | TN_ERROR))) rc = TN_EINVAL;
    else rc = tn_add_handler(l, fd, events, tn__fdwait_io, w);
    if (!rc && timeout_ms) {
        rc = tn_call_later(l, timeout_ms, tn__fdwait_timeout, w, &w->timer);
        if (rc) tn_remove_handler(l, fd);
        else w->timer_armed = 1;
    }
    if (rc) {
        tn__free(w);
        tn_future_fail(f, rc);
        return f;
    }
    tn_future_on_cancel(f, tn__fdwait_cancelled, w);
    return f;
}

/* shared: one result, many waiters. */
struct tn_shared {
    tn_loop *loop;
    tn_future *src; /* NULL once done */
    tn__waitlist waiters;
    void *value;
    tn_free_fn free_value;
    int err, done;
};

static void tn__shared_src_done(tn_future *f, void *arg) {
    tn_shared *s = (tn_shared *)arg;
    s->err = tn_future_error(f);
    s->free_value = f->free_value;
    s->value = s->err ? NULL : tn_future_take(f);
    tn_future_release(f);
    s->src = NULL;
    s->done = 1;
    while (s->waiters.n) {
        tn__waiter w = tn__waitlist_pop(&s->waiters);
        tn_future_on_cancel(w.f, NULL, NULL);
        if (s->err) tn_future_fail(w.f, s->err);
        else tn_future_resolve(w.f, s->value);
    }
}

tn_shared *tn_shared_new(tn_loop *l, tn_future *f) {
    tn_shared *s;
    if (!f) return NULL;
    if (!(s = (tn_shared *)tn__malloc(l, sizeof *s))) {
        tn_future_cancel(f);
        tn_future_release(f);
        return NULL;
    }
    memset(s, 0, sizeof *s);
    s->loop = l;
    s->src = f;
    tn_future_on_done(f, tn__shared_src_done, s);
    return s;
}

static void tn__shared_wait_cancelled(tn_future *f, void *arg) {
    tn__waitlist_remove(&((tn_shared *)arg)->waiters, f);
    tn_future_fail(f, TN_ECANCELLED);
}

tn_future *tn_shared_wait(tn_shared *s) {
    tn_future *f;
    if (s->done) {
        if ((f = tn_future_new(s->loop)) != NULL) {
            if (s->err) tn_future_fail(f, s->err);
            else tn_future_resolve(f, s->value);
        }
        return f;
    }
    return tn__waitlist_wait(s->loop, &s->waiters, NULL, tn__shared_wait_cancelled, s);
}

int tn_shared_done(const tn_shared *s) { return s->done; }
int tn_shared_error(const tn_shared *s) { return s->done ? s->err : TN_ESTATE; }
void *tn_shared_value(const tn_shared *s) { return s->done && !s->err ? s->value : NULL; }

void tn_shared_free(tn_shared *s) {
    if (!s) return;
    if (s->src) { /* still running: stop it; our done callback never runs */
        tn_future *f = s->src;
        f->done_fn = NULL;
        tn_future_cancel(f);
        tn_future_release(f);
    }
    tn__waitlist_fail_all(&s->waiters, TN_ECANCELLED);
    if (s->value && s->free_value) s->free_value(s->value);
    tn__free(s);
}


/* ==========================================================================
 * STREAMS: sockets, the acceptor, buffers, the stream core, the connector
 * and the public TCP streams. The HTTP server and client are owners of
 * streams: they never read or write a socket themselves. Without any of
 * the three (TN_NO_TCP, TN_NO_HTTP_SERVER, TN_NO_HTTP_CLIENT all set) the
 * layer is not compiled: the loop, futures and coroutines remain.
 * ========================================================================== */
#if TN__STREAMS

/* ---------------------------------------------------------------- sockets
 * Every socket we make or accept is non-blocking and close-on-exec, and is
 * written with MSG_NOSIGNAL (or has SO_NOSIGPIPE where that is the only
 * way), so a write to a reset peer is an EPIPE for us, never a SIGPIPE that
 * kills an application that did not ignore it. */
#if defined(MSG_NOSIGNAL) /* POSIX.1-2008 (send), so TN_POSIX_ONLY keeps it */
#define TN__NOSIGNAL MSG_NOSIGNAL
#else
#define TN__NOSIGNAL 0
#endif

static void tn__sock_prepare(int fd) {
#if defined(SO_NOSIGPIPE) && TN__NOSIGNAL == 0
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
#else
    (void)fd;
#endif
}

static int tn__socket(int family) {
    int fd;
#if TN__LINUX
    fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
#else
    int rc;
    fd = socket(family, SOCK_STREAM, 0);
    if (fd < 0) return -errno;
    if ((rc = tn__set_nonblock_cloexec(fd)) != 0) {
        close(fd);
        return rc;
    }
#endif
    tn__sock_prepare(fd);
    return fd;
}

TN__UNUSED static int tn__accept(int lfd) {
    int fd;
#if TN__LINUX
    fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return -errno;
#else
    int rc;
    fd = accept(lfd, NULL, NULL);
    if (fd < 0) return -errno;
    if ((rc = tn__set_nonblock_cloexec(fd)) != 0) {
        close(fd);
        return rc;
    }
#endif
    tn__sock_prepare(fd);
    return fd;
}

/* Binds and listens: shared by tn_tcp_listen and the HTTP server. host is
 * an IPv4 or IPv6 address or a name ("localhost"; resolved here, once, so
 * call it before serving), NULL for 127.0.0.1. Returns the fd or an error,
 * and the bound port. */
TN__UNUSED static int tn__listen_socket(const char *host, int port, int backlog, int reuseport, int *port_out) {
    struct addrinfo hints, *res = NULL;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char ps[8];
    int fd, one = 1, rc = 0;
    if (port < 0 || port > 65535) return TN_EINVAL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(ps, sizeof ps, "%d", port);
    if (getaddrinfo(host ? host : "127.0.0.1", ps, &hints, &res) != 0 || !res) return TN_EINVAL;
    fd = tn__socket(res->ai_family);
    if (fd < 0) {
        freeaddrinfo(res);
        return fd;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
#ifdef SO_REUSEPORT
    if (reuseport) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
#else
    (void)reuseport;
#endif
    if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, backlog) < 0 ||
        getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
        rc = -errno;
    freeaddrinfo(res);
    if (rc) {
        close(fd);
        return rc;
    }
    if (port_out)
        *port_out = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                             : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}

#if !defined(TN_NO_TCP) || !defined(TN_NO_HTTP_SERVER)
/* --------------------------------------------------------------- acceptor
 * One accept loop for tn_tcp_listen and the HTTP server: a batch per
 * readiness event. When accept fails for want of fds or memory (EMFILE,
 * ENFILE, ENOBUFS, ENOMEM) the listener stays readable, so a level-
 * triggered loop would spin on it: the acceptor pauses it for 100 ms, on a
 * timer its owner cancels (tn__acceptor_close) when it goes away. */
typedef struct tn__acceptor tn__acceptor;
typedef void (*tn__accept_fn)(tn__acceptor *a, int fd);

struct tn__acceptor {
    tn_loop *loop;
    tn__accept_fn fn; /* owns the new fd */
    void *arg;        /* the owner's */
    int fd;
    int paused;
    tn_timer resume;
};

#define TN__ACCEPT_BATCH 64
#define TN__ACCEPT_PAUSE_MS 100

static void tn__acceptor_resume(tn_loop *l, void *arg) {
    tn__acceptor *a = (tn__acceptor *)arg;
    a->paused = 0;
    tn_update_handler(l, a->fd, TN_READ);
}

static void tn__acceptor_io(tn_loop *l, int lfd, unsigned events, void *arg) {
    tn__acceptor *a = (tn__acceptor *)arg;
    uint32_t gen = l->handlers[lfd].gen;
    int i;
    (void)events;
    for (i = 0; i < TN__ACCEPT_BATCH; i++) {
        int fd = tn__accept(lfd);
        if (fd == -EINTR || fd == -ECONNABORTED) continue;
        if (fd == -EMFILE || fd == -ENFILE || fd == -ENOBUFS || fd == -ENOMEM) {
            if (tn_call_later(l, TN__ACCEPT_PAUSE_MS, tn__acceptor_resume, a, &a->resume) == 0) {
                a->paused = 1;
                tn_update_handler(l, lfd, 0);
            }
            return;
        }
        if (fd < 0) return; /* EAGAIN: the backlog is empty */
        a->fn(a, fd);
        /* The callback may have closed this listener. */
        if (l->handlers[lfd].gen != gen) return;
    }
}

static int tn__acceptor_open(tn__acceptor *a, tn_loop *l, int fd, tn__accept_fn fn, void *arg) {
    a->loop = l;
    a->fn = fn;
    a->arg = arg;
    a->fd = fd;
    a->paused = 0;
    return tn_add_handler(l, fd, TN_READ, tn__acceptor_io, a);
}

static void tn__acceptor_close(tn__acceptor *a) {
    if (a->fd < 0) return;
    if (a->paused) tn_cancel_timer(a->loop, a->resume);
    a->paused = 0;
    tn_remove_handler(a->loop, a->fd);
    close(a->fd);
    a->fd = -1;
}

#endif /* the acceptor */

/* ---------------------------------------------------------------- buffers
 * Streams borrow read and write buffers only while they read or write; an
 * idle keep-alive connection holds none. Freed buffers of the standard size
 * wait on a per-loop free list (up to TN_BUF_POOL of them). */
typedef struct tn__buf {
    char *data;
    size_t off, len, cap; /* live bytes: data[off .. len) */
} tn__buf;

static char *tn__buf_take(tn_loop *l) {
    char *p = (char *)l->buf_free;
    if (p) {
        l->buf_free = *(void **)p;
        l->nbuf_free--;
        return p;
    }
    return (char *)tn__malloc(l, TN_BUF_SIZE);
}

static void tn__buf_give(tn_loop *l, char *p) {
    if (l->nbuf_free + 1 <= TN_BUF_POOL) { /* not "<": -Wtype-limits at 0 */
        *(void **)p = l->buf_free;
        l->buf_free = p;
        l->nbuf_free++;
    } else {
        tn__free(p);
    }
}

/* Room for extra more bytes after len, up to a capacity of at most max
 * (0: no limit): the live bytes slide down first, and the buffer grows by
 * doubling. 0, or TN_ENOMEM / TN_EFULL (then b is unchanged). */
static int tn__buf_reserve_max(tn_loop *l, tn__buf *b, size_t extra, size_t max) {
    size_t need, ncap;
    char *nd;
    if (!b->data) {
        if (max && max < TN_BUF_SIZE && extra <= max) {
            if (!(b->data = (char *)tn__malloc(l, max))) return TN_ENOMEM;
            b->cap = max;
        } else {
            if (!(b->data = tn__buf_take(l))) return TN_ENOMEM;
            b->cap = TN_BUF_SIZE;
        }
        b->off = b->len = 0;
    }
    if (b->cap - b->len >= extra) return 0;
    if (b->off) {
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->cap - b->len >= extra) return 0;
    }
    need = b->len + extra;
    if (need < b->len || (max && need > max)) return TN_EFULL;
    for (ncap = b->cap; ncap < need; ncap = ncap > SIZE_MAX / 2 ? need : ncap * 2) {}
    if (max && ncap > max) ncap = max;
    nd = (char *)tn__realloc(l, b->data, ncap);
    if (!nd) return TN_ENOMEM;
    b->data = nd;
    b->cap = ncap;
    return 0;
}

static int tn__buf_reserve(tn_loop *l, tn__buf *b, size_t extra) {
    return tn__buf_reserve_max(l, b, extra, 0);
}

static void tn__buf_release(tn_loop *l, tn__buf *b) {
    if (!b->data) return;
    if (b->cap == TN_BUF_SIZE) tn__buf_give(l, b->data);
    else tn__free(b->data);
    b->data = NULL;
    b->off = b->len = b->cap = 0;
}

static void tn__bufpool_free(tn_loop *l) {
    while (l->buf_free) {
        void *next = *(void **)l->buf_free;
        tn__free(l->buf_free);
        l->buf_free = next;
    }
    l->nbuf_free = 0;
    while (l->sio_free) {
        void *next = *(void **)l->sio_free;
        tn__free(l->sio_free);
        l->sio_free = next;
    }
    l->nsio_free = 0;
}

/* ------------------------------------------------------------ stream core
 * A stream owns an fd, an input buffer and an output queue. The output is
 * copies (one buffer) and, between them, parts held by reference: memory
 * the owner handed over with a free function, or a range of a file (sent
 * with sendfile(2) where it exists). Its owner (the HTTP connection, the
 * HTTP client, a tn_stream user) gets three calls: bytes arrived, output
 * drained, failed. Output is queued by tn__stream_queue and friends and
 * written by tn__stream_flush, so a batch of pipelined responses goes out
 * in one sendmsg(2).
 *
 * Input is bounded: a read goes into the free room of the buffer; only when
 * the unconsumed bytes fill it does it slide them down or grow it, and never
 * past what the owner's in_limit() says the input may hold now (the head
 * limit, a body the owner asked for). A full buffer at that limit pauses
 * reading until the owner consumes. */
typedef struct tn__oref tn__oref;
struct tn__oref {
    tn__oref *next;
    uint64_t at;    /* copy bytes queued before it (ever): its place among the copies */
    const char *p;  /* what is left of it in memory, or NULL for a file */
    uint64_t len;   /* bytes left */
    int fd;         /* a file part: its fd, read from off */
    uint64_t off;
    tn_free_fn fr;  /* run once it is written or dropped (may be NULL) */
    void *frarg;
};

typedef struct tn__stream_ops {
    void (*on_read)(tn_stream *s);           /* new bytes in the input, EOF, or the input is full */
    void (*on_drain)(tn_stream *s);          /* pending output fell to low or below */
    void (*on_error)(tn_stream *s, int err); /* read/write failed; s is closed */
    /* The capacity the input buffer may have now, in bytes; 0: the buffer
     * must not move (the owner holds pointers into it). NULL: TN_BUF_SIZE. */
    size_t (*in_limit)(tn_stream *s);
    size_t low; /* on_drain once pending output is at most this (per owner kind) */
    void (*on_secure)(tn_stream *s); /* a TLS handshake is done (NULL: nothing to do) */
    /* A TLS server's answer, sent as is, to a client that speaks plain HTTP
     * to it (NULL: none; the connection just closes, as on any garbage). */
    const char *plain_answer;
} tn__stream_ops;

#define TN__S_EOF 1u     /* the peer closed its side */
#define TN__S_CLOSED 2u  /* our fd is closed */
#define TN__S_READING 4u /* we want TN_READ */
#define TN__S_FULL 8u    /* the input is at its limit: reading waits for the owner */
#define TN__S_HANDSHAKE 16u /* TLS: the handshake is under way */
#define TN__S_TLS_WANTW 32u /* TLS: a read waits for the socket to be writable */
#define TN__S_TLS_WANTR 64u /* TLS: a write (or the handshake) waits for it to be readable */
#define TN__S_BULK 128u     /* the last read filled the input buffer: the peer sends faster */

/* The TLS layer under a stream (see TLS): the stream reads and writes
 * through it, so owners never know it is there. */
typedef struct tn__tls tn__tls;
#define TN__TLS_AGAIN_R (-2001) /* would block: wants the socket readable */
#define TN__TLS_AGAIN_W (-2002) /* would block: wants it writable */

/* What a stream holds only while it has bytes in or out: an idle stream
 * (a keep-alive connection between requests) gives it back to the loop. */
typedef struct tn__sio {
    tn__buf in, out; /* out: the copies */
    tn__oref *refs, *refs_tail;
    uint64_t cq, cw;   /* copy bytes ever queued and ever written: place the refs */
    uint64_t refbytes; /* bytes of refs still to write */
    uint64_t written;  /* bytes ever written */
    uint64_t stall_mark;  /* the write-stall clock (see there): what the peer had taken */
    tn_timer stall_timer;
    unsigned stall_ms, stall_quiet;
    int stall_armed;
#if TN__TLS
    int tls_kick_armed;
    tn__tls *tls;       /* TLS over the socket, or NULL (a TLS stream keeps its I/O state) */
    tn_timer tls_kick;  /* reads TLS data already decrypted (no fd event will tell) */
#endif
} tn__sio;

struct tn_stream {
    tn_loop *loop;
    const tn__stream_ops *ops;
    tn__sio *io;     /* NULL while idle */
    int fd;
    uint16_t flags;  /* TN__S_* */
    uint16_t oflags; /* the owner's own bits: here they cost no padding */
};

/* The stream's I/O state, made (from the loop's pool) on first use. */
static tn__sio *tn__stream_sio(tn_stream *s) {
    tn_loop *l = s->loop;
    tn__sio *io = s->io;
    if (io) return io;
    if ((io = (tn__sio *)l->sio_free) != NULL) {
        l->sio_free = *(void **)io;
        l->nsio_free--;
    } else if (!(io = (tn__sio *)tn__malloc(l, sizeof *io))) {
        return NULL;
    }
    memset(io, 0, sizeof *io);
    return s->io = io;
}

/* Gives the I/O state back once nothing is in it. */
static void tn__stream_idle(tn_stream *s) {
    tn__sio *io = s->io;
    tn_loop *l = s->loop;
    if (!io || io->in.data || io->out.data || io->refs || io->stall_armed) return;
#if TN__TLS
    if (io->tls) return;
#endif
    s->io = NULL;
    if (l->nsio_free + 1 <= TN_BUF_POOL) {
        *(void **)io = l->sio_free;
        l->sio_free = io;
        l->nsio_free++;
    } else {
        tn__free(io);
    }
}

/* The owner is done with the input it has (all consumed, or dropped). */
static void tn__stream_in_release(tn_stream *s) {
    if (!s->io) return;
    tn__buf_release(s->loop, &s->io->in);
    tn__stream_idle(s);
}

static void tn__stream_io(tn_loop *l, int fd, unsigned events, void *arg);
static void tn__stream_stall_fire(tn_loop *l, void *arg);

static int tn__stream_init(tn_stream *s, tn_loop *l, int fd, const tn__stream_ops *ops) {
    memset(s, 0, sizeof *s);
    s->loop = l;
    s->fd = fd;
    s->ops = ops;
    s->flags = TN__S_READING;
    return tn_add_handler(l, fd, TN_READ, tn__stream_io, s);
}

static size_t tn__stream_pending(const tn_stream *s) {
    return s->io ? s->io->out.len - s->io->out.off + (size_t)s->io->refbytes : 0;
}
static size_t tn__stream_avail(const tn_stream *s) {
    return s->io && s->io->in.data ? s->io->in.len - s->io->in.off : 0;
}

static void tn__stream_interest(tn_stream *s) {
    unsigned ev = 0;
    if (s->flags & TN__S_CLOSED) return;
    if (s->flags & TN__S_HANDSHAKE) { /* what the handshake waits for, only */
        tn_update_handler(s->loop, s->fd, (s->flags & TN__S_TLS_WANTW) ? TN_WRITE : TN_READ);
        return;
    }
    if ((s->flags & TN__S_READING) && !(s->flags & (TN__S_EOF | TN__S_FULL))) ev |= TN_READ;
    if (tn__stream_pending(s)) ev |= TN_WRITE;
    if (s->flags & TN__S_TLS_WANTW) ev |= TN_WRITE;
    if (s->flags & TN__S_TLS_WANTR) ev |= TN_READ;
    /* Neither: still hear a reset, so a paused connection that dies is
     * noticed (its handler cancelled) instead of lingering. */
    tn_update_handler(s->loop, s->fd, ev ? ev : TN_ERROR); /* a no-op when unchanged */
}

/* The owner wants input (on) or not. Asking again also lifts a pause for a
 * full buffer: the owner has consumed, or the limit has grown. */
#if TN__TLS
static size_t tn__tls_pending(tn__tls *t);
static void tn__tls_free(tn__tls *t, int notify);
static int tn__tls_read(tn__tls *t, char *buf, size_t n, size_t *got);
static void tn__stream_kick(tn_loop *l, void *arg);
#endif

static void tn__stream_set_reading(tn_stream *s, int on) {
    s->flags &= (uint16_t)~TN__S_FULL;
    if (on) s->flags |= TN__S_READING;
    else s->flags &= (uint16_t)~TN__S_READING;
    tn__stream_interest(s);
#if TN__TLS
    /* Bytes TLS decrypted already but did not fit the buffer: no fd event
     * will say they are there, so read them on the next iteration. */
    if (on && s->io && s->io->tls && !s->io->tls_kick_armed && !(s->flags & (TN__S_CLOSED | TN__S_HANDSHAKE)) &&
        tn__tls_pending(s->io->tls) &&
        tn_call_later(s->loop, 0, tn__stream_kick, s, &s->io->tls_kick) == 0)
        s->io->tls_kick_armed = 1;
#endif
}

/* Drops the by-reference parts (their free functions run). */
static void tn__stream_drop_output(tn_stream *s) {
    tn__sio *io = s->io;
    if (!io) return;
    while (io->refs) {
        tn__oref *r = io->refs;
        io->refs = r->next;
        if (r->fr) r->fr(r->frarg);
        tn__free(r);
    }
    io->refs_tail = NULL;
    io->refbytes = 0;
    tn__buf_release(s->loop, &io->out);
    tn__stream_idle(s);
}

/* Closes the fd and drops the output. The input stays until the owner
 * releases it (a handler may still hold pointers into it); the owner frees
 * the stream. */
static void tn__stream_close(tn_stream *s) {
    if (s->flags & TN__S_CLOSED) return;
    s->flags |= TN__S_CLOSED;
    tn_remove_handler(s->loop, s->fd);
#if TN__TLS
    if (s->io && s->io->tls) {
        if (s->io->tls_kick_armed) tn_cancel_timer(s->loop, s->io->tls_kick);
        s->io->tls_kick_armed = 0;
        tn__tls_free(s->io->tls, !(s->flags & TN__S_HANDSHAKE)); /* close_notify, best effort */
        s->io->tls = NULL;
    }
#endif
    close(s->fd);
    s->fd = -1;
    if (s->io && s->io->stall_armed) {
        tn_cancel_timer(s->loop, s->io->stall_timer);
        s->io->stall_armed = 0;
    }
    tn__stream_drop_output(s);
}

/* Bytes the peer has taken: what we wrote, less what still sits in the
 * kernel's send queue (TIOCOUTQ where there is one). Our own writes alone
 * cannot tell a slow reader from a dead one when the kernel buffers
 * megabytes. */
static uint64_t tn__stream_delivered(const tn_stream *s) {
#if defined(TIOCOUTQ) && TN__LINUX
    int queued = 0;
    uint64_t written = s->io ? s->io->written : 0;
    if (ioctl(s->fd, TIOCOUTQ, &queued) == 0 && queued >= 0 && (uint64_t)queued <= written)
        return written - (uint64_t)queued;
    return written;
#else
    return s->io ? s->io->written : 0;
#endif
}

/* Whether the kernel still holds bytes the peer has not taken (1 where
 * that cannot be asked). */
static int tn__stream_kernel_queued(const tn_stream *s) {
#if defined(TIOCOUTQ) && TN__LINUX
    int queued = 0;
    if (ioctl(s->fd, TIOCOUTQ, &queued) == 0) return queued > 0;
#else
    (void)s;
#endif
    return 1;
}

/* Room for n more bytes of copies: a pointer to write them at, committed
 * with tn__stream_commit. NULL: out of memory, or the stream is closed. */
static char *tn__stream_room(tn_stream *s, size_t n) {
    tn__sio *io;
    if ((s->flags & TN__S_CLOSED) || !(io = tn__stream_sio(s))) return NULL;
    if (tn__buf_reserve(s->loop, &io->out, n)) {
        tn__stream_idle(s);
        return NULL;
    }
    return io->out.data + io->out.len;
}
static void tn__stream_commit(tn_stream *s, size_t n) {
    s->io->out.len += n;
    s->io->cq += n;
}

/* Queues a copy of p[0..n): all of it, or nothing (TN_ENOMEM, TN_ECLOSED). */
TN__UNUSED static int tn__stream_queue(tn_stream *s, const char *p, size_t n) {
    char *o;
    if (s->flags & TN__S_CLOSED) return TN_ECLOSED;
    if (!n) return 0;
    if (!(o = tn__stream_room(s, n))) return TN_ENOMEM;
    memcpy(o, p, n);
    tn__stream_commit(s, n);
    return 0;
}

/* Queues pre (a copy), then n bytes by reference, then post (a copy): all
 * of it or nothing (so a chunk's framing is never left half-written). The
 * reference is memory p, or (p NULL) the file fd from offset off. fr(frarg)
 * runs once those bytes are written, or dropped with the stream, or at once
 * if this fails: the caller's part ends here in every case. 0, TN_ENOMEM or
 * TN_ECLOSED. */
TN__UNUSED static int tn__stream_queue_ref(tn_stream *s, const char *pre, size_t prelen, const char *p, int fd, uint64_t off,
                                uint64_t n, const char *post, size_t postlen, tn_free_fn fr, void *frarg) {
    tn__oref *r = NULL;
    tn__sio *io = NULL;
    int rc = (s->flags & TN__S_CLOSED) ? TN_ECLOSED : 0;
    if (!rc && !n) {
        if (fr) fr(frarg);
        return 0;
    }
    if (!rc && (!(io = tn__stream_sio(s)) || (prelen + postlen && !tn__stream_room(s, prelen + postlen)) ||
                !(r = (tn__oref *)tn__malloc(s->loop, sizeof *r))))
        rc = TN_ENOMEM;
    if (rc) {
        if (io) tn__stream_idle(s);
        if (fr) fr(frarg);
        return rc;
    }
    if (prelen) memcpy(io->out.data + io->out.len, pre, prelen);
    tn__stream_commit(s, prelen);
    r->next = NULL;
    r->at = io->cq;
    r->p = p;
    r->len = n;
    r->fd = fd;
    r->off = off;
    r->fr = fr;
    r->frarg = frarg;
    if (io->refs_tail) io->refs_tail->next = r;
    else io->refs = r;
    io->refs_tail = r;
    io->refbytes += n;
    if (postlen) memcpy(io->out.data + io->out.len, post, postlen); /* the room reserved above */
    tn__stream_commit(s, postlen);
    return 0;
}

/* n bytes went out, in queue order: advance over the copies and parts. */
static void tn__stream_advance(tn_stream *s, size_t n) {
    tn__sio *io = s->io;
    io->written += n;
    while (n) {
        tn__oref *r = io->refs;
        size_t copies = io->out.len - io->out.off, take;
        if (r && r->at - io->cw < copies) copies = (size_t)(r->at - io->cw);
        if (copies) {
            take = n < copies ? n : copies;
            io->out.off += take;
            io->cw += take;
            n -= take;
            continue;
        }
        TN_ASSERT(r != NULL);
        take = (uint64_t)n < r->len ? n : (size_t)r->len;
        if (r->p) r->p += take;
        else r->off += take;
        r->len -= take;
        io->refbytes -= take;
        n -= take;
        if (!r->len) {
            io->refs = r->next;
            if (!io->refs) io->refs_tail = NULL;
            if (r->fr) r->fr(r->frarg);
            tn__free(r);
        }
    }
}

/* Sends part of the file part r (at the head of the queue). */
static ssize_t tn__stream_send_file(tn_stream *s, tn__oref *r) {
    size_t want = r->len > ((size_t)1 << 30) ? (size_t)1 << 30 : (size_t)r->len;
    /* A 32-bit off_t (no _FILE_OFFSET_BITS=64 in this file): past 2 GiB
     * is an error, never a wrapped offset. */
    if (sizeof(off_t) < 8 && r->off + want > 0x7fffffffu) {
        errno = EFBIG;
        return -1;
    }
#if TN__LINUX
    off_t off = (off_t)r->off;
    ssize_t n = sendfile(s->fd, r->fd, &off, want);
    if (n == 0) errno = EIO; /* the file is shorter than it was said to be */
    return n == 0 ? -1 : n;
#else
    /* A read into a borrowed pool buffer: what the socket does not take is
     * read again next time, so memory stays one buffer whatever the size. */
    char *buf = tn__buf_take(s->loop);
    ssize_t n, w = -1;
    if (!buf) {
        errno = ENOMEM;
        return -1;
    }
    if (want > TN_BUF_SIZE) want = TN_BUF_SIZE;
    n = pread(r->fd, buf, want, (off_t)r->off);
    if (n > 0) w = send(s->fd, buf, (size_t)n, TN__NOSIGNAL);
    else if (n == 0) errno = EIO;
    tn__buf_give(s->loop, buf);
    return w;
#endif
}

/* Writes what it can: the copies and the memory parts in order with one
 * sendmsg(2) (a file part goes on its own). Returns 0 (maybe with bytes
 * left: then TN_WRITE is watched) or an error (the stream is then closed
 * and on_error called). */
#if TN__TLS
static ssize_t tn__stream_tls_send(tn_stream *s, const struct iovec *iov, int k);
#endif

static int tn__stream_flush(tn_stream *s) {
    tn__sio *io = s->io;
    if (s->flags & TN__S_HANDSHAKE) { /* it goes once the handshake is done */
        tn__stream_interest(s);
        return 0;
    }
    s->flags &= (uint16_t)~TN__S_TLS_WANTR;
    while (tn__stream_pending(s)) {
        struct iovec iov[8];
        struct msghdr mh;
        tn__oref *r = io->refs;
        size_t coff = io->out.off;
        uint64_t cpos = io->cw;
        int k = 0;
        ssize_t n;
        while (k < 8) {
            size_t copies = io->out.len - coff;
            if (r && r->at - cpos < copies) copies = (size_t)(r->at - cpos);
            if (copies) {
                iov[k].iov_base = io->out.data + coff;
                iov[k++].iov_len = copies;
                coff += copies;
                cpos += copies;
                continue;
            }
            if (!r || !r->p) break; /* the end, or a file part */
            iov[k].iov_base = (void *)(uintptr_t)r->p;
            iov[k++].iov_len = (size_t)r->len;
            r = r->next;
        }
#if TN__TLS
        if (io->tls) {
            n = tn__stream_tls_send(s, iov, k);
            if (n == TN__TLS_AGAIN_W) break;
            if (n == TN__TLS_AGAIN_R) { /* a write that needs a read first */
                s->flags |= TN__S_TLS_WANTR;
                break;
            }
            if (n < 0) {
                tn__stream_close(s);
                s->ops->on_error(s, (int)n);
                return (int)n;
            }
            tn__stream_advance(s, (size_t)n);
            continue;
        }
#endif
        if (k) {
            memset(&mh, 0, sizeof mh);
            mh.msg_iov = iov;
            mh.msg_iovlen = k;
            n = sendmsg(s->fd, &mh, TN__NOSIGNAL);
        } else {
            n = tn__stream_send_file(s, io->refs);
        }
        if (n < 0) {
            int err = errno;
            if (err == EINTR) continue;
            if (err == EAGAIN || err == EWOULDBLOCK) break;
            tn__stream_close(s);
            s->ops->on_error(s, -err);
            return -err;
        }
        tn__stream_advance(s, (size_t)n);
    }
    if (io && io->out.off == io->out.len) {
        tn__buf_release(s->loop, &io->out);
        tn__stream_idle(s);
    }
    tn__stream_interest(s);
    return 0;
}

/* One read per readiness event (level-triggered polling brings us back if
 * more is waiting, and other connections get their turn meanwhile). 1: bytes
 * arrived, or EOF, or the buffer is full (TN__S_FULL set: reading paused);
 * 0: nothing yet; < 0: an error. */
static int tn__stream_read(tn_stream *s) {
    tn__sio *io = tn__stream_sio(s);
    tn__buf *in;
    ssize_t n;
    if (!io) return TN_ENOMEM;
    in = &io->in;
    if (in->data && (s->flags & TN__S_BULK) && in->cap < TN_BUF_BULK) {
        /* The last read filled the buffer: a bulk transfer. A bigger buffer
         * (within the owner's limit, which holds the server's budget: the
         * growth is charged like any input beyond TN_BUF_SIZE) takes it in
         * fewer reads and polls. It moves, as a buffer that doubles when
         * full does; the limit is 0 when it must not. */
        size_t limit = s->ops->in_limit ? s->ops->in_limit(s) : TN_BUF_SIZE, want = in->cap * 2;
        if (want > TN_BUF_BULK) want = TN_BUF_BULK;
        if (want > limit) want = limit;
        s->flags &= (uint16_t)~TN__S_BULK;
        if (in->off == in->len) in->off = in->len = 0;
        if (want > in->cap) {
            char *nd = (char *)tn__realloc(s->loop, in->data, want);
            if (nd) { /* else: reading on in the buffer we have */
                in->data = nd;
                in->cap = want;
            }
        }
    }
    if (!in->data || in->len == in->cap) {
        size_t limit = s->ops->in_limit ? s->ops->in_limit(s) : TN_BUF_SIZE;
        int rc;
        if (!in->data) /* a first buffer: the pool's, or a smaller one if that is the limit */
            rc = tn__buf_reserve_max(s->loop, in, 1, !limit || limit > TN_BUF_SIZE ? TN_BUF_SIZE : limit);
        else if (limit && (in->off || in->cap < limit)) /* slide, or double up to the limit */
            rc = tn__buf_reserve_max(s->loop, in, 1, limit);
        else
            rc = TN_EFULL;
        if (rc == TN_EFULL) {
            /* Not a byte more: the owner must consume (or fail) first. */
            s->flags |= TN__S_FULL;
            tn__stream_interest(s);
            return 1;
        }
        if (rc) {
            tn__stream_idle(s);
            return rc;
        }
    }
#if TN__TLS
    if (io->tls) {
        /* Everything TLS has decrypted that fits: a record's rest would
         * wait for an fd event that never comes. */
        int got = 0;
        s->flags &= (uint16_t)~TN__S_TLS_WANTW;
        while (in->len < in->cap) {
            size_t k = 0;
            int rc = tn__tls_read(io->tls, in->data + in->len, in->cap - in->len, &k);
            if (rc == 0) {
                in->len += k;
                got = 1;
                continue;
            }
            if (rc == TN__TLS_AGAIN_R) break;
            if (rc == TN__TLS_AGAIN_W) {
                s->flags |= TN__S_TLS_WANTW;
                tn__stream_interest(s);
                break;
            }
            if (rc == 1) { /* the peer closed (close_notify or a plain EOF) */
                s->flags |= TN__S_EOF;
                tn__stream_interest(s);
                return 1;
            }
            return rc;
        }
        /* The buffer filled with a record's rest still decrypted in TLS:
         * no fd event will tell, so look again on the next iteration
         * (close cancels it; a full buffer waits for set_reading). */
        if (in->len == in->cap && !io->tls_kick_armed && tn__tls_pending(io->tls) &&
            tn_call_later(s->loop, 0, tn__stream_kick, s, &io->tls_kick) == 0)
            io->tls_kick_armed = 1;
        return got;
    }
#endif
    do
        n = read(s->fd, in->data + in->len, in->cap - in->len);
    while (n < 0 && errno == EINTR);
    if (n > 0) {
        if ((size_t)n == in->cap - in->len) s->flags |= TN__S_BULK;
        else s->flags &= (uint16_t)~TN__S_BULK;
        in->len += (size_t)n;
        return 1;
    }
    if (n == 0) {
        s->flags |= TN__S_EOF;
        tn__stream_interest(s);
        return 1;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    return -errno;
}

/* The peer is gone while we did not read (a hang-up or error event). */
static void tn__stream_fail_hangup(tn_stream *s, int fallback) {
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0) soerr = errno;
    tn__stream_close(s);
    s->ops->on_error(s, soerr ? -soerr : fallback);
}

#if TN__TLS
static int tn__tls_handshake(tn__tls *t);
static int tn__tls_plain_peer(tn__tls *t, int fd);

/* Sends the owner's plain answer (it fits a socket buffer: best effort),
 * then reads what the client sent, so the close is a FIN (the answer
 * arrives) rather than a reset for unread data. */
static void tn__stream_plain_answer(tn_stream *s) {
    const char *a = s->ops->plain_answer;
    char buf[512];
    int i;
    (void)!send(s->fd, a, strlen(a), TN__NOSIGNAL);
    shutdown(s->fd, SHUT_WR);
    for (i = 0; i < 64 && recv(s->fd, buf, sizeof buf, 0) > 0; i++) {
    }
}

/* One step of the handshake. 1: done (the stream goes on as plain);
 * 0: it waits; -1: it failed (the stream is closed, on_error told). */
static int tn__stream_handshake(tn_stream *s) {
    int rc;
    if (s->ops->plain_answer && tn__tls_plain_peer(s->io->tls, s->fd)) {
        tn__stream_plain_answer(s);
        tn__stream_close(s);
        s->ops->on_error(s, TN_ETLS);
        return -1;
    }
    rc = tn__tls_handshake(s->io->tls);
    s->flags &= (uint16_t)~(TN__S_TLS_WANTW | TN__S_TLS_WANTR);
    if (rc == TN__TLS_AGAIN_R || rc == TN__TLS_AGAIN_W) {
        if (rc == TN__TLS_AGAIN_W) s->flags |= TN__S_TLS_WANTW;
        tn__stream_interest(s);
        return 0;
    }
    if (rc < 0) {
        tn__stream_close(s);
        s->ops->on_error(s, rc);
        return -1;
    }
    s->flags &= (uint16_t)~TN__S_HANDSHAKE;
    tn__stream_interest(s);
    if (s->ops->on_secure) s->ops->on_secure(s);
    return 1;
}

static void tn__stream_io(tn_loop *l, int fd, unsigned events, void *arg);
static void tn__stream_kick(tn_loop *l, void *arg) {
    tn_stream *s = (tn_stream *)arg;
    s->io->tls_kick_armed = 0;
    tn__stream_io(l, s->fd, TN_READ, s);
}
#endif

static void tn__stream_io(tn_loop *l, int fd, unsigned events, void *arg) {
    tn_stream *s = (tn_stream *)arg;
    (void)l;
    (void)fd;
#if TN__TLS
    if (s->flags & TN__S_HANDSHAKE) {
        if (tn__stream_handshake(s) <= 0) return;
        /* Done: queued output goes, and records that came with the last
         * handshake flight are read. */
        events = TN_READ | (tn__stream_pending(s) ? TN_WRITE : 0u);
    }
    if (s->flags & TN__S_TLS_WANTW && (events & TN_WRITE)) events |= TN_READ; /* the read it waited for */
    if (s->flags & TN__S_TLS_WANTR && (events & TN_READ)) events |= TN_WRITE;
#endif
    if (events == TN_ERROR && !(s->flags & TN__S_CLOSED)) {
        /* Watched for hang-ups only (paused) and the peer is gone. */
        tn__stream_fail_hangup(s, -ECONNRESET);
        return;
    }
    if ((events & TN_WRITE) && tn__stream_pending(s)) {
        if (tn__stream_flush(s)) return;
        if (tn__stream_pending(s) <= s->ops->low) {
            /* s is not touched after on_drain: its owner may be gone (an
             * HTTP connection that closes once its output is out frees
             * itself there). A read that was ready too is reported again:
             * the poll is level-triggered. */
            s->ops->on_drain(s);
            return;
        }
    }
    if ((events & (TN_READ | TN_ERROR)) && (s->flags & TN__S_READING) && !(s->flags & (TN__S_EOF | TN__S_FULL))) {
        int rc = tn__stream_read(s);
        if (rc < 0) {
            tn__stream_close(s);
            s->ops->on_error(s, rc);
            return;
        }
        if (rc > 0) s->ops->on_read(s);
    } else if ((events & TN_ERROR) && !(s->flags & TN__S_CLOSED)) {
        /* A hang-up or error (a reset) while we do not read: nothing above
         * consumed it, so the level-triggered poll would report it again at
         * once, forever (a busy loop), and the owner would never hear that
         * the peer is gone. */
        tn__stream_fail_hangup(s, TN_ECLOSED);
    }
}

/* ------------------------------------------------------ write-stall clock
 * A peer that takes none of our output for ms (nginx's send_timeout)
 * fails the stream with TN_ETIMEOUT. The clock runs only while output is
 * pending, and looks at the peer's progress (what it took: delivered, not
 * what we wrote) every ms/4: a stall is caught between ms and 1.25 ms after
 * the last byte the peer took. (Looking once per ms cut a peer that stopped
 * just after a look at nearly 2 ms.) When the kernel's queue is empty the
 * delay is ours, not the peer's, and does not count. */
static void tn__stream_stall_arm(tn_stream *s) {
    tn__sio *io = s->io;
    unsigned q = io->stall_ms / 4 ? io->stall_ms / 4 : 1;
    io->stall_armed = tn_call_later(s->loop, q, tn__stream_stall_fire, s, &io->stall_timer) == 0;
}

static void tn__stream_stall_fire(tn_loop *l, void *arg) {
    tn_stream *s = (tn_stream *)arg;
    tn__sio *io = s->io;
    uint64_t d;
    unsigned q = io->stall_ms / 4 ? io->stall_ms / 4 : 1;
    (void)l;
    io->stall_armed = 0;
    if (!tn__stream_pending(s) || (s->flags & TN__S_CLOSED)) return;
    d = tn__stream_delivered(s);
    if (d != io->stall_mark || !tn__stream_kernel_queued(s)) {
        io->stall_mark = d;
        io->stall_quiet = 0;
    } else if ((io->stall_quiet += q) >= io->stall_ms) {
        tn__stream_close(s);
        s->ops->on_error(s, TN_ETIMEOUT);
        return;
    }
    tn__stream_stall_arm(s);
}

/* After a flush: starts the clock if output is left, stops it if not. */
TN__UNUSED static void tn__stream_stall_watch(tn_stream *s, unsigned ms) {
    tn__sio *io = s->io;
    if (!io) return;
    if (tn__stream_pending(s) && !io->stall_armed && ms) {
        io->stall_ms = ms;
        io->stall_quiet = 0;
        io->stall_mark = tn__stream_delivered(s);
        tn__stream_stall_arm(s);
    } else if (!tn__stream_pending(s) && io->stall_armed) {
        tn_cancel_timer(s->loop, io->stall_timer);
        io->stall_armed = 0;
    }
}

/* ==================================================================== TLS
 * TLS as a transport under tn_stream (OpenSSL with -DTN_TLS_OPENSSL,
 * mbedTLS with -DTN_TLS_MBEDTLS): the stream reads and writes through it
 * and drives the handshake on the loop (want-read / want-write become the
 * fd's interest), so the HTTP server, the HTTP client and user streams
 * get it unchanged. A backend is one block with the same functions:
 *   tn__tlsb_ctx_load     (re)build the library's context from the files
 *   tn__tlsb_ctx_drop     free it
 *   tn__tlsb_new          a connection's state over an fd (client: SNI and
 *                         the name to verify)
 *   tn__tlsb_handshake, tn__tlsb_read, tn__tlsb_write, tn__tlsb_pending
 *   tn__tlsb_close        close_notify (best effort), free
 *   tn__tlsb_session_get / tn__tlsb_session_set / tn__tlsb_session_free
 * Errors say which failure it is: TN_ETLS_UNTRUSTED, TN_ETLS_EXPIRED,
 * TN_ETLS_NAME, TN_ETLS_TIMEOUT (the handshake's clock is the owner's),
 * TN_ETLS (protocol: a plain-HTTP client on a TLS port, garbage, no common
 * version or cipher). */
#if TN__TLS

/* A context: shared by the connections made from it (each holds a
 * reference), replaced in place by tn_tls_ctx_reload. */
typedef struct tn__tls_sni {
    char *name, *cert, *key;
    void *lib; /* the backend's context for this certificate */
} tn__tls_sni;

struct tn_tls_ctx {
    int refs, server;
    tn_tls_opts opts; /* with our copies of the strings */
    void *lib;        /* the backend's context (its own references: see the backend) */
    tn__tls_sni *sni;
    size_t nsni;
};

struct tn__tls {
    tn_tls_ctx *ctx;
    void *lib; /* the backend's per-connection state */
    unsigned char notified, started;
};

static int tn__tlsb_ctx_load(tn_tls_ctx *c, const char *cert, const char *key, void **out);
static void tn__tlsb_ctx_drop(void *lib);
static int tn__tlsb_new(tn__tls *t, int fd, const char *host);
static int tn__tlsb_handshake(tn__tls *t);
static int tn__tlsb_read(tn__tls *t, char *buf, size_t n, size_t *got);
static int tn__tlsb_write(tn__tls *t, const char *buf, size_t n, size_t *put);
static size_t tn__tlsb_pending(tn__tls *t);
static void tn__tlsb_close(tn__tls *t, int notify);
static void tn__tlsb_notify(tn__tls *t);
static int tn__tlsb_resumed(tn__tls *t);
static void *tn__tlsb_session_get(tn__tls *t);
static void tn__tlsb_session_set(tn__tls *t, void *session);
static void tn__tlsb_session_free(void *session);

static char *tn__tls_dup(const char *s) { /* TLS contexts have no loop (and no TN_NO_MALLOC) */
    char *d = s ? (char *)TN_MALLOC(strlen(s) + 1) : NULL;
    if (d) memcpy(d, s, strlen(s) + 1);
    return d;
}

static int tn__grow_n(void **p, size_t n, size_t elem) {
    void *np = TN_REALLOC(*p, n * elem);
    if (!np) return TN_ENOMEM;
    *p = np;
    return 0;
}

static void tn__tls_ctx_unref(tn_tls_ctx *c) {
    size_t i;
    if (--c->refs > 0) return;
    tn__tlsb_ctx_drop(c->lib);
    for (i = 0; i < c->nsni; i++) {
        tn__tlsb_ctx_drop(c->sni[i].lib);
        tn__free(c->sni[i].name);
        tn__free(c->sni[i].cert);
        tn__free(c->sni[i].key);
    }
    tn__free(c->sni);
    tn__free((void *)(uintptr_t)c->opts.cert_file);
    tn__free((void *)(uintptr_t)c->opts.key_file);
    tn__free((void *)(uintptr_t)c->opts.ca_file);
    tn__free((void *)(uintptr_t)c->opts.ca_dir);
    tn__free((void *)(uintptr_t)c->opts.ciphers);
    tn__free(c);
}

static int tn__tls_version_ok(int v) { return v == 0 || v == 12 || v == 13; }

static int tn__tls_ctx_new(const tn_tls_opts *o, int server, tn_tls_ctx **out) {
    tn_tls_ctx *c = (tn_tls_ctx *)TN_MALLOC(sizeof *c);
    int rc;
    *out = NULL;
    if (!c) return TN_ENOMEM;
    memset(c, 0, sizeof *c);
    c->refs = 1;
    c->server = server;
    if (o) c->opts = *o;
    c->opts.cert_file = tn__tls_dup(c->opts.cert_file);
    c->opts.key_file = tn__tls_dup(c->opts.key_file);
    c->opts.ca_file = tn__tls_dup(c->opts.ca_file);
    c->opts.ca_dir = tn__tls_dup(c->opts.ca_dir);
    c->opts.ciphers = tn__tls_dup(c->opts.ciphers);
    if (server && (!c->opts.cert_file || !c->opts.key_file)) rc = TN_EINVAL;
    else if (!tn__tls_version_ok(c->opts.min_version) || !tn__tls_version_ok(c->opts.max_version) ||
             (c->opts.max_version && c->opts.min_version > c->opts.max_version))
        rc = TN_EINVAL;
    else rc = tn__tlsb_ctx_load(c, c->opts.cert_file, c->opts.key_file, &c->lib);
    if (rc) {
        tn__tls_ctx_unref(c);
        return rc;
    }
    *out = c;
    return 0;
}

int tn_tls_server_ctx_new(const tn_tls_opts *o, tn_tls_ctx **out) { return tn__tls_ctx_new(o, 1, out); }
int tn_tls_client_ctx_new(const tn_tls_opts *o, tn_tls_ctx **out) { return tn__tls_ctx_new(o, 0, out); }
void tn_tls_ctx_free(tn_tls_ctx *c) {
    if (c) tn__tls_ctx_unref(c);
}

int tn_tls_ctx_add_sni(tn_tls_ctx *c, const char *name, const char *cert, const char *key) {
    tn__tls_sni *n;
    void *lib;
    int rc;
    if (!c->server || !name || !cert || !key) return TN_EINVAL;
    if ((rc = tn__tlsb_ctx_load(c, cert, key, &lib)) != 0) return rc;
    if (tn__grow_n((void **)&c->sni, c->nsni + 1, sizeof *c->sni)) {
        tn__tlsb_ctx_drop(lib);
        return TN_ENOMEM;
    }
    n = &c->sni[c->nsni];
    n->name = tn__tls_dup(name);
    n->cert = tn__tls_dup(cert);
    n->key = tn__tls_dup(key);
    n->lib = lib;
    if (!n->name || !n->cert || !n->key) {
        tn__free(n->name);
        tn__free(n->cert);
        tn__free(n->key);
        tn__tlsb_ctx_drop(lib);
        return TN_ENOMEM;
    }
    c->nsni++;
    return 0;
}

/* Re-reads every certificate and key: connections from now on use the new
 * ones; those under way keep theirs. All or nothing. */
int tn_tls_ctx_reload(tn_tls_ctx *c) {
    void *lib, **libs;
    size_t i;
    int rc;
    if (!(libs = (void **)TN_MALLOC((c->nsni + 1) * sizeof *libs))) return TN_ENOMEM;
    if ((rc = tn__tlsb_ctx_load(c, c->opts.cert_file, c->opts.key_file, &lib)) != 0) {
        tn__free(libs);
        return rc;
    }
    for (i = 0; i < c->nsni; i++)
        if ((rc = tn__tlsb_ctx_load(c, c->sni[i].cert, c->sni[i].key, &libs[i])) != 0) {
            while (i--) tn__tlsb_ctx_drop(libs[i]);
            tn__tlsb_ctx_drop(lib);
            tn__free(libs);
            return rc;
        }
    tn__tlsb_ctx_drop(c->lib);
    c->lib = lib;
    for (i = 0; i < c->nsni; i++) {
        tn__tlsb_ctx_drop(c->sni[i].lib);
        c->sni[i].lib = libs[i];
    }
    tn__free(libs);
    return 0;
}

/* The context for a server name (SNI), or NULL: the default one. */
static void *tn__tls_sni_lib(tn_tls_ctx *c, const char *name) {
    size_t i;
    if (!name) return NULL;
    for (i = 0; i < c->nsni; i++)
        if (strcasecmp(c->sni[i].name, name) == 0) return c->sni[i].lib;
    return NULL;
}

/* A stream becomes TLS: the handshake starts on its next event. host: the client's name to verify and
 * send as SNI; session: a client's earlier session to resume (or NULL). */
static int tn__stream_start_tls(tn_stream *s, tn_tls_ctx *ctx, const char *host, void *session) {
    tn__sio *io = tn__stream_sio(s);
    tn__tls *t;
    int rc;
    if (!io) return TN_ENOMEM;
    if (!(t = (tn__tls *)TN_MALLOC(sizeof *t))) {
        tn__stream_idle(s);
        return TN_ENOMEM;
    }
    memset(t, 0, sizeof *t);
    t->ctx = ctx;
    if ((rc = tn__tlsb_new(t, s->fd, host)) != 0) {
        tn__free(t);
        tn__stream_idle(s);
        return rc;
    }
    ctx->refs++;
    if (session) tn__tlsb_session_set(t, session);
    io->tls = t;
    /* The first step on the next event (a client's ClientHello once the
     * socket is writable: at once), never from here: a failure then
     * reaches the owner's on_error from the loop, not inside its call. */
    s->flags |= TN__S_HANDSHAKE | (ctx->server ? 0u : TN__S_TLS_WANTW);
    tn__stream_interest(s);
    return 0;
}

static int tn__tls_handshake(tn__tls *t) { return tn__tlsb_handshake(t); }
/* A server's first step: does the client speak plain HTTP? It starts with
 * a method's capital letter, a TLS record with 22 (as nginx tells them). */
static int tn__tls_plain_peer(tn__tls *t, int fd) {
    char c;
    if (t->started) return 0;
    t->started = 1;
    return t->ctx->server && recv(fd, &c, 1, MSG_PEEK) == 1 && c >= 'A' && c <= 'Z';
}
static int tn__tls_read(tn__tls *t, char *buf, size_t n, size_t *got) { return tn__tlsb_read(t, buf, n, got); }
static size_t tn__tls_pending(tn__tls *t) { return tn__tlsb_pending(t); }
/* Our close_notify now (a lingering close sends it before its FIN). */
TN__UNUSED static void tn__tls_notify(tn__tls *t) {
    if (t->notified) return;
    t->notified = 1;
    tn__tlsb_notify(t);
}
static void tn__tls_free(tn__tls *t, int notify) {
    tn__tlsb_close(t, notify && !t->notified);
    tn__tls_ctx_unref(t->ctx);
    tn__free(t);
}

/* Writes pieces in order through TLS: the bytes it took (maybe fewer than
 * all), TN__TLS_AGAIN_R/W when it took none, or an error. A file part
 * goes through one pooled buffer (what TLS does not take is read again). */
static ssize_t tn__stream_tls_send(tn_stream *s, const struct iovec *iov, int k) {
    size_t total = 0;
    int i, rc = 0;
    if (!k) { /* a file part at the head of the queue */
        tn__oref *r = s->io->refs;
        char *buf = tn__buf_take(s->loop);
        size_t want = r->len < TN_BUF_SIZE ? (size_t)r->len : TN_BUF_SIZE, put = 0;
        ssize_t n;
        if (!buf) return TN_ENOMEM;
        n = pread(r->fd, buf, want, (off_t)r->off);
        if (n <= 0) rc = n < 0 ? -errno : -EIO;
        else rc = tn__tlsb_write(s->io->tls, buf, (size_t)n, &put);
        tn__buf_give(s->loop, buf);
        return rc ? rc : (ssize_t)put;
    }
    for (i = 0; i < k; i++) {
        size_t put = 0;
        rc = tn__tlsb_write(s->io->tls, (const char *)iov[i].iov_base, iov[i].iov_len, &put);
        total += put;
        if (rc || put < iov[i].iov_len) break;
    }
    if (total) return (ssize_t)total;
    return rc ? rc : TN__TLS_AGAIN_W;
}

/* --------------------------------------------------------------- OpenSSL */
#if defined(TN_TLS_OPENSSL)
/* The library's contexts are refcounted (an SSL holds its SSL_CTX): a
 * reload frees ours, connections keep theirs alive. */
static int tn__tlsb_servername(SSL *ssl, int *alert, void *arg) {
    tn_tls_ctx *c = (tn_tls_ctx *)arg;
    SSL_CTX *alt = (SSL_CTX *)tn__tls_sni_lib(c, SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name));
    (void)alert;
    if (alt) SSL_set_SSL_CTX(ssl, alt);
    return SSL_TLSEXT_ERR_OK;
}

static int tn__tlsb_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                         unsigned inlen, void *arg) {
    static const unsigned char h11[] = "\x08http/1.1";
    unsigned char *o;
    (void)ssl;
    (void)arg;
    if (SSL_select_next_proto(&o, outlen, h11, sizeof h11 - 1, in, inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK; /* no http/1.1 offered: go on without ALPN */
    *out = o;
    return SSL_TLSEXT_ERR_OK;
}

static int tn__tlsb_version(int v) { return v == 13 ? TLS1_3_VERSION : v == 12 ? TLS1_2_VERSION : 0; }

static int tn__tlsb_ctx_load(tn_tls_ctx *c, const char *cert, const char *key, void **out) {
    SSL_CTX *x = SSL_CTX_new(c->server ? TLS_server_method() : TLS_client_method());
    int minv = tn__tlsb_version(c->opts.min_version), maxv = tn__tlsb_version(c->opts.max_version);
    if (!x) return TN_ENOMEM;
    SSL_CTX_set_min_proto_version(x, minv ? minv : TLS1_2_VERSION);
    if (maxv) SSL_CTX_set_max_proto_version(x, maxv);
    SSL_CTX_set_mode(x, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_options(x, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    if (c->opts.ciphers && !SSL_CTX_set_cipher_list(x, c->opts.ciphers)) goto fail;
    if (cert && (SSL_CTX_use_certificate_chain_file(x, cert) != 1 || SSL_CTX_use_PrivateKey_file(x, key, SSL_FILETYPE_PEM) != 1 ||
                 SSL_CTX_check_private_key(x) != 1))
        goto fail;
    if (c->server) {
        SSL_CTX_set_tlsext_servername_callback(x, tn__tlsb_servername);
        SSL_CTX_set_tlsext_servername_arg(x, c);
        SSL_CTX_set_alpn_select_cb(x, tn__tlsb_alpn, NULL);
        /* Resumption by tickets only (stateless): a server-side cache
         * would keep up to 20000 sessions a stream of clients can fill,
         * and flushing it costs every 255th handshake a walk of it. */
        SSL_CTX_set_session_cache_mode(x, SSL_SESS_CACHE_OFF);
    } else {
        SSL_CTX_set_session_cache_mode(x, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        if (!c->opts.insecure) {
            SSL_CTX_set_verify(x, SSL_VERIFY_PEER, NULL);
            if (c->opts.ca_file || c->opts.ca_dir) {
                if (SSL_CTX_load_verify_locations(x, c->opts.ca_file, c->opts.ca_dir) != 1) goto fail;
            } else if (SSL_CTX_set_default_verify_paths(x) != 1) {
                goto fail;
            }
        }
    }
    *out = x;
    return 0;
fail:
    ERR_clear_error();
    SSL_CTX_free(x);
    return TN_EINVAL; /* a file that is missing or not what it should be */
}

static void tn__tlsb_ctx_drop(void *lib) { SSL_CTX_free((SSL_CTX *)lib); }

static int tn__tlsb_new(tn__tls *t, int fd, const char *host) {
    SSL *ssl = SSL_new((SSL_CTX *)t->ctx->lib);
    if (!ssl) return TN_ENOMEM;
    if (!SSL_set_fd(ssl, fd)) goto fail;
    if (t->ctx->server) {
        SSL_set_accept_state(ssl);
    } else {
        unsigned char ip[16];
        int literal = host && (inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1);
        SSL_set_connect_state(ssl);
        SSL_set_alpn_protos(ssl, (const unsigned char *)"\x08http/1.1", 9);
        if (host && !literal) SSL_set_tlsext_host_name(ssl, host); /* SNI names hosts, never addresses */
        if (host && !t->ctx->opts.insecure) {
            if (literal) X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host);
            else SSL_set1_host(ssl, host);
        }
    }
    t->lib = ssl;
    return 0;
fail:
    SSL_free(ssl);
    return TN_ENOMEM;
}

/* The error of a failed call, as the caller's code. */
static int tn__tlsb_err(tn__tls *t, int ret) {
    SSL *ssl = (SSL *)t->lib;
    int e = SSL_get_error(ssl, ret);
    long v;
    if (e == SSL_ERROR_WANT_READ) return TN__TLS_AGAIN_R;
    if (e == SSL_ERROR_WANT_WRITE) return TN__TLS_AGAIN_W;
    if (e == SSL_ERROR_ZERO_RETURN) return 1; /* close_notify */
    v = SSL_get_verify_result(ssl);
    ERR_clear_error();
    if (e == SSL_ERROR_SYSCALL && errno && errno != EAGAIN) return errno == EPIPE || errno == ECONNRESET ? TN_ECLOSED : -errno;
    if (v != X509_V_OK && !t->ctx->server) {
        if (v == X509_V_ERR_CERT_HAS_EXPIRED || v == X509_V_ERR_CERT_NOT_YET_VALID) return TN_ETLS_EXPIRED;
        if (v == X509_V_ERR_HOSTNAME_MISMATCH || v == X509_V_ERR_IP_ADDRESS_MISMATCH) return TN_ETLS_NAME;
        return TN_ETLS_UNTRUSTED;
    }
    if (e == SSL_ERROR_SYSCALL) return 1; /* EOF without close_notify: the connection ended */
    return TN_ETLS;
}

static int tn__tlsb_handshake(tn__tls *t) {
    int r = SSL_do_handshake((SSL *)t->lib);
    if (r == 1) return 0;
    r = tn__tlsb_err(t, r);
    return r == 1 ? TN_ETLS : r; /* an EOF in the handshake is a failed one */
}

static int tn__tlsb_read(tn__tls *t, char *buf, size_t n, size_t *got) {
    size_t k = 0;
    int r = SSL_read_ex((SSL *)t->lib, buf, n, &k);
    *got = k;
    return r == 1 ? 0 : tn__tlsb_err(t, r);
}

static int tn__tlsb_write(tn__tls *t, const char *buf, size_t n, size_t *put) {
    size_t k = 0;
    int r = SSL_write_ex((SSL *)t->lib, buf, n, &k);
    *put = k;
    if (r == 1) return 0;
    r = tn__tlsb_err(t, r);
    return r == 1 ? TN_ECLOSED : r;
}

static size_t tn__tlsb_pending(tn__tls *t) { return (size_t)SSL_pending((SSL *)t->lib); }

static void tn__tlsb_notify(tn__tls *t) {
    (void)SSL_shutdown((SSL *)t->lib);
    ERR_clear_error();
}
static void tn__tlsb_close(tn__tls *t, int notify) {
    SSL *ssl = (SSL *)t->lib;
    if (notify) (void)SSL_shutdown(ssl); /* sends our close_notify; does not wait for theirs */
    ERR_clear_error();
    SSL_free(ssl);
}

TN__UNUSED static void *tn__tlsb_session_get(tn__tls *t) { return SSL_get1_session((SSL *)t->lib); }
static void tn__tlsb_session_set(tn__tls *t, void *s) { SSL_set_session((SSL *)t->lib, (SSL_SESSION *)s); }
TN__UNUSED static void tn__tlsb_session_free(void *s) { SSL_SESSION_free((SSL_SESSION *)s); }
TN__UNUSED static int tn__tlsb_resumed(tn__tls *t) { return SSL_session_reused((SSL *)t->lib); }
const char *tn_tls_backend(void) { return "openssl"; }

/* --------------------------------------------------------------- mbedTLS
 * Written for mbedTLS 2.28 (Debian 12), which speaks TLS 1.2 (its TLS 1.3
 * is not in that release: a min_version of 13 is TN_ENOTSUP). Contexts are
 * refcounted here: a connection holds the one it was made from (and the
 * SNI one it switched to), so a reload never frees what it still uses. */
#elif defined(TN_TLS_MBEDTLS)
typedef struct tn__mbed {
    int refs, has_cert;
    tn_tls_ctx *ctx; /* for the SNI callback */
    mbedtls_ssl_config conf;
    mbedtls_x509_crt ca, cert;
    mbedtls_pk_context key;
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_ssl_cache_context cache;
} tn__mbed;

typedef struct tn__mbedconn {
    mbedtls_ssl_context ssl;
    tn__mbed *lib, *alt;
    int fd;
    int resumed; /* a client's handshake resumed a session */
    unsigned char ip[16]; /* a client's address literal to verify (mbedTLS 2.28 does not) */
    size_t iplen;
} tn__mbedconn;

static void tn__mbed_unref(tn__mbed *m) {
    if (!m || --m->refs > 0) return;
    mbedtls_ssl_config_free(&m->conf);
    mbedtls_x509_crt_free(&m->ca);
    mbedtls_x509_crt_free(&m->cert);
    mbedtls_pk_free(&m->key);
    mbedtls_ctr_drbg_free(&m->drbg);
    mbedtls_entropy_free(&m->entropy);
    mbedtls_ssl_cache_free(&m->cache);
    tn__free(m);
}

static int tn__mbed_sni(void *arg, mbedtls_ssl_context *ssl, const unsigned char *name, size_t len) {
    tn__mbed *m = (tn__mbed *)arg, *alt;
    tn__mbedconn *mc = (tn__mbedconn *)((char *)ssl - offsetof(tn__mbedconn, ssl));
    char host[256];
    if (len >= sizeof host) return 0;
    memcpy(host, name, len);
    host[len] = 0;
    alt = (tn__mbed *)tn__tls_sni_lib(m->ctx, host);
    if (!alt || mc->alt) return 0;
    alt->refs++;
    mc->alt = alt;
    return mbedtls_ssl_set_hs_own_cert(ssl, &alt->cert, &alt->key);
}

static int tn__tlsb_ctx_load(tn_tls_ctx *c, const char *cert, const char *key, void **out) {
    static const char *alpn[] = {"http/1.1", NULL};
    tn__mbed *m = (tn__mbed *)TN_MALLOC(sizeof *m);
    int ok = 1;
    if (!m) return TN_ENOMEM;
    memset(m, 0, sizeof *m);
    m->refs = 1;
    m->ctx = c;
    mbedtls_ssl_config_init(&m->conf);
    mbedtls_x509_crt_init(&m->ca);
    mbedtls_x509_crt_init(&m->cert);
    mbedtls_pk_init(&m->key);
    mbedtls_entropy_init(&m->entropy);
    mbedtls_ctr_drbg_init(&m->drbg);
    mbedtls_ssl_cache_init(&m->cache);
    if (c->opts.min_version == 13) {
        tn__mbed_unref(m);
        return TN_ENOTSUP;
    }
    ok = mbedtls_ctr_drbg_seed(&m->drbg, mbedtls_entropy_func, &m->entropy, (const unsigned char *)"tornado.h", 9) == 0 &&
         mbedtls_ssl_config_defaults(&m->conf, c->server ? MBEDTLS_SSL_IS_SERVER : MBEDTLS_SSL_IS_CLIENT,
                                     MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT) == 0;
    if (ok) {
        mbedtls_ssl_conf_rng(&m->conf, mbedtls_ctr_drbg_random, &m->drbg);
        mbedtls_ssl_conf_min_version(&m->conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3); /* TLS 1.2 */
        mbedtls_ssl_conf_renegotiation(&m->conf, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
        ok = mbedtls_ssl_conf_alpn_protocols(&m->conf, alpn) == 0;
    }
    if (ok && cert) {
        ok = mbedtls_x509_crt_parse_file(&m->cert, cert) == 0 && mbedtls_pk_parse_keyfile(&m->key, key, NULL) == 0 &&
             mbedtls_pk_check_pair(&m->cert.pk, &m->key) == 0 && /* the key is the certificate's */
             mbedtls_ssl_conf_own_cert(&m->conf, &m->cert, &m->key) == 0;
        m->has_cert = ok;
    }
    if (ok && c->server) {
        mbedtls_ssl_conf_sni(&m->conf, tn__mbed_sni, m);
        mbedtls_ssl_conf_session_cache(&m->conf, &m->cache, mbedtls_ssl_cache_get, mbedtls_ssl_cache_set);
    } else if (ok) {
        if (c->opts.insecure) {
            mbedtls_ssl_conf_authmode(&m->conf, MBEDTLS_SSL_VERIFY_NONE);
        } else {
            if (c->opts.ca_file) ok = mbedtls_x509_crt_parse_file(&m->ca, c->opts.ca_file) == 0;
            if (ok && c->opts.ca_dir) ok = mbedtls_x509_crt_parse_path(&m->ca, c->opts.ca_dir) >= 0;
            if (ok && !c->opts.ca_file && !c->opts.ca_dir) /* the system's store (Debian's bundle) */
                ok = mbedtls_x509_crt_parse_file(&m->ca, "/etc/ssl/certs/ca-certificates.crt") >= 0 ||
                     mbedtls_x509_crt_parse_path(&m->ca, "/etc/ssl/certs") >= 0;
            mbedtls_ssl_conf_ca_chain(&m->conf, &m->ca, NULL);
            mbedtls_ssl_conf_authmode(&m->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
        }
    }
    if (!ok) {
        tn__mbed_unref(m);
        return TN_EINVAL;
    }
    *out = m;
    return 0;
}

static void tn__tlsb_ctx_drop(void *lib) { tn__mbed_unref((tn__mbed *)lib); }

static int tn__mbed_send(void *arg, const unsigned char *buf, size_t len) {
    tn__mbedconn *mc = (tn__mbedconn *)arg;
    ssize_t n = send(mc->fd, buf, len, TN__NOSIGNAL);
    if (n >= 0) return (int)n;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return MBEDTLS_ERR_SSL_WANT_WRITE;
    return errno == EPIPE || errno == ECONNRESET ? MBEDTLS_ERR_NET_CONN_RESET : MBEDTLS_ERR_NET_SEND_FAILED;
}

static int tn__mbed_recv(void *arg, unsigned char *buf, size_t len) {
    tn__mbedconn *mc = (tn__mbedconn *)arg;
    ssize_t n = recv(mc->fd, buf, len, 0);
    if (n >= 0) return (int)n;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return MBEDTLS_ERR_SSL_WANT_READ;
    return errno == ECONNRESET ? MBEDTLS_ERR_NET_CONN_RESET : MBEDTLS_ERR_NET_RECV_FAILED;
}

static int tn__tlsb_new(tn__tls *t, int fd, const char *host) {
    tn__mbedconn *mc = (tn__mbedconn *)TN_MALLOC(sizeof *mc);
    tn__mbed *m = (tn__mbed *)t->ctx->lib;
    if (!mc) return TN_ENOMEM;
    memset(mc, 0, sizeof *mc);
    mbedtls_ssl_init(&mc->ssl);
    mc->fd = fd;
    if (mbedtls_ssl_setup(&mc->ssl, &m->conf) != 0) {
        mbedtls_ssl_free(&mc->ssl);
        tn__free(mc);
        return TN_ENOMEM;
    }
    mbedtls_ssl_set_bio(&mc->ssl, mc, tn__mbed_send, tn__mbed_recv, NULL);
    if (!t->ctx->server && host) {
        if (inet_pton(AF_INET, host, mc->ip) == 1) mc->iplen = 4;
        else if (inet_pton(AF_INET6, host, mc->ip) == 1) mc->iplen = 16;
        /* a name: SNI and the name check; an address: checked after */
        if (!mc->iplen && mbedtls_ssl_set_hostname(&mc->ssl, host) != 0) {
            mbedtls_ssl_free(&mc->ssl);
            tn__free(mc);
            return TN_EINVAL;
        }
    }
    m->refs++;
    mc->lib = m;
    t->lib = mc;
    return 0;
}

/* An address literal against the certificate's iPAddress names. */
static int tn__mbed_ip_ok(tn__mbedconn *mc) {
    const mbedtls_x509_crt *crt = mbedtls_ssl_get_peer_cert(&mc->ssl);
    const mbedtls_x509_sequence *san;
    if (!crt) return 0;
    for (san = &crt->subject_alt_names; san && san->buf.p; san = san->next)
        if (san->buf.tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 7) && san->buf.len == mc->iplen &&
            memcmp(san->buf.p, mc->ip, mc->iplen) == 0)
            return 1;
    return 0;
}

static int tn__mbed_err(tn__tls *t, int r) {
    tn__mbedconn *mc = (tn__mbedconn *)t->lib;
    uint32_t flags;
    if (r == MBEDTLS_ERR_SSL_WANT_READ) return TN__TLS_AGAIN_R;
    if (r == MBEDTLS_ERR_SSL_WANT_WRITE) return TN__TLS_AGAIN_W;
    if (r == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) return 1;
    if (r == MBEDTLS_ERR_NET_CONN_RESET) return TN_ECLOSED;
    if (!t->ctx->server && (flags = mbedtls_ssl_get_verify_result(&mc->ssl)) != 0 && flags != (uint32_t)-1) {
        if (flags & (MBEDTLS_X509_BADCERT_EXPIRED | MBEDTLS_X509_BADCERT_FUTURE)) return TN_ETLS_EXPIRED;
        if (flags & MBEDTLS_X509_BADCERT_CN_MISMATCH) return TN_ETLS_NAME;
        return TN_ETLS_UNTRUSTED;
    }
    return TN_ETLS;
}

static int tn__tlsb_handshake(tn__tls *t) {
    tn__mbedconn *mc = (tn__mbedconn *)t->lib;
    int r = 0;
    /* Step by step, to see resumption (2.28 has no getter): a client that
     * resumes goes from the ServerHello straight to the server's
     * ChangeCipherSpec (or ticket); a full handshake reads a Certificate. */
    while (r == 0 && mc->ssl.state != MBEDTLS_SSL_HANDSHAKE_OVER) {
        int before = mc->ssl.state;
        r = mbedtls_ssl_handshake_step(&mc->ssl);
        if (before == MBEDTLS_SSL_SERVER_HELLO && mc->ssl.state != before && !t->ctx->server)
            mc->resumed = mc->ssl.state == MBEDTLS_SSL_SERVER_CHANGE_CIPHER_SPEC;
    }
    if (r) {
        r = tn__mbed_err(t, r);
        return r == 1 ? TN_ETLS : r;
    }
    if (mc->iplen && !t->ctx->opts.insecure && !tn__mbed_ip_ok(mc)) return TN_ETLS_NAME;
    return 0;
}

static int tn__tlsb_read(tn__tls *t, char *buf, size_t n, size_t *got) {
    tn__mbedconn *mc = (tn__mbedconn *)t->lib;
    int r = mbedtls_ssl_read(&mc->ssl, (unsigned char *)buf, n);
    *got = r > 0 ? (size_t)r : 0;
    if (r > 0) return 0;
    if (r == 0) return 1; /* EOF */
    return tn__mbed_err(t, r);
}

static int tn__tlsb_write(tn__tls *t, const char *buf, size_t n, size_t *put) {
    tn__mbedconn *mc = (tn__mbedconn *)t->lib;
    int r = mbedtls_ssl_write(&mc->ssl, (const unsigned char *)buf, n);
    *put = r > 0 ? (size_t)r : 0;
    if (r >= 0) return 0;
    r = tn__mbed_err(t, r);
    return r == 1 ? TN_ECLOSED : r;
}

static size_t tn__tlsb_pending(tn__tls *t) { return mbedtls_ssl_get_bytes_avail(&((tn__mbedconn *)t->lib)->ssl); }

static void tn__tlsb_notify(tn__tls *t) { (void)mbedtls_ssl_close_notify(&((tn__mbedconn *)t->lib)->ssl); }
static void tn__tlsb_close(tn__tls *t, int notify) {
    tn__mbedconn *mc = (tn__mbedconn *)t->lib;
    if (notify) (void)mbedtls_ssl_close_notify(&mc->ssl);
    mbedtls_ssl_free(&mc->ssl);
    tn__mbed_unref(mc->lib);
    tn__mbed_unref(mc->alt);
    tn__free(mc);
}

TN__UNUSED static void *tn__tlsb_session_get(tn__tls *t) {
    mbedtls_ssl_session *s = (mbedtls_ssl_session *)TN_MALLOC(sizeof *s);
    if (!s) return NULL;
    mbedtls_ssl_session_init(s);
    if (mbedtls_ssl_get_session(&((tn__mbedconn *)t->lib)->ssl, s) != 0) {
        mbedtls_ssl_session_free(s);
        tn__free(s);
        return NULL;
    }
    return s;
}
static void tn__tlsb_session_set(tn__tls *t, void *s) {
    /* best effort: a full handshake otherwise */
    (void)mbedtls_ssl_set_session(&((tn__mbedconn *)t->lib)->ssl, (const mbedtls_ssl_session *)s);
}
TN__UNUSED static void tn__tlsb_session_free(void *s) {
    mbedtls_ssl_session_free((mbedtls_ssl_session *)s);
    tn__free(s);
}
TN__UNUSED static int tn__tlsb_resumed(tn__tls *t) { return ((tn__mbedconn *)t->lib)->resumed; }
const char *tn_tls_backend(void) { return "mbedtls"; }
#endif /* the backends */
#endif /* TN__TLS */

#if !defined(TN_NO_TCP) || !defined(TN_NO_HTTP_CLIENT)
/* -------------------------------------------------------------- connector
 * Resolve (numeric at once, names on the executor), then a non-blocking
 * connect, all under one timeout. Used by tn_tcp_connect and the client. */

typedef struct tn__connector tn__connector;
typedef void (*tn__connect_fn)(tn__connector *cn, int fd, int err);

/* The resolver's job record is its own result, so a job still running when
 * its connector is gone frees itself through the future (free_result). */
typedef struct tn__resolve_job {
    char host[256];
    int port;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    struct sockaddr_storage alt; /* the first address of the other family */
    socklen_t altlen;            /* 0: none */
} tn__resolve_job;

struct tn__connector {
    tn_loop *loop;
    tn__connect_fn done;
    void *arg;
    tn_future *resolving;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    struct sockaddr_storage alt; /* tried if addr fails (altlen 0: none) */
    socklen_t altlen;
    tn_timer timer;
    int fd, timer_armed, finished;
};

static int tn__resolve_work(void *arg, void **result) {
    tn__resolve_job *j = (tn__resolve_job *)arg;
    struct addrinfo hints, *res = NULL;
    char port[16];
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port, sizeof port, "%d", j->port);
    *result = j;
    if (getaddrinfo(j->host, port, &hints, &res) != 0 || !res) return TN_ERESOLVE;
    memcpy(&j->addr, res->ai_addr, res->ai_addrlen);
    j->addrlen = (socklen_t)res->ai_addrlen;
    /* "localhost" is ::1 first on most dual-stack hosts, while our own
     * listeners are IPv4: keep the first address of the other family to
     * fall back on (as Tornado's TCPClient tries both families). */
    {
        struct addrinfo *ai;
        for (ai = res->ai_next; ai; ai = ai->ai_next)
            if (ai->ai_family != res->ai_family && ai->ai_addrlen <= sizeof j->alt) {
                memcpy(&j->alt, ai->ai_addr, ai->ai_addrlen);
                j->altlen = (socklen_t)ai->ai_addrlen;
                break;
            }
    }
    freeaddrinfo(res);
    return 0;
}

static void tn__connector_finish(tn__connector *cn, int fd, int err) {
    if (cn->finished) return;
    cn->finished = 1;
    if (cn->timer_armed) tn_cancel_timer(cn->loop, cn->timer);
    cn->timer_armed = 0;
    if (cn->fd >= 0) tn_remove_handler(cn->loop, cn->fd);
    if (err && cn->fd >= 0) close(cn->fd);
    cn->fd = -1;
    if (cn->resolving) {
        tn_future_release(cn->resolving); /* a running lookup frees itself */
        cn->resolving = NULL;
    }
    cn->done(cn, err ? -1 : fd, err);
}

static void tn__connector_connect(tn__connector *cn);

/* The address failed: try the other family's address if there is one. */
static int tn__connector_next(tn__connector *cn) {
    if (!cn->altlen || cn->finished) return 0;
    if (cn->fd >= 0) {
        tn_remove_handler(cn->loop, cn->fd);
        close(cn->fd);
        cn->fd = -1;
    }
    memcpy(&cn->addr, &cn->alt, sizeof cn->addr);
    cn->addrlen = cn->altlen;
    cn->altlen = 0;
    tn__connector_connect(cn);
    return 1;
}

static void tn__connector_writable(tn_loop *l, int fd, unsigned events, void *arg) {
    tn__connector *cn = (tn__connector *)arg;
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    (void)l;
    (void)events;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0) soerr = errno;
    if (soerr) {
        if (tn__connector_next(cn)) return;
        tn__connector_finish(cn, -1, soerr == ECONNREFUSED ? TN_EREFUSED : -soerr);
        return;
    }
    tn__connector_finish(cn, fd, 0);
}

static void tn__connector_connect(tn__connector *cn) {
    int fd = tn__socket(cn->addr.ss_family), rc;
    if (fd < 0) { /* e.g. no IPv6 here: the other family may work */
        if (tn__connector_next(cn)) return;
        tn__connector_finish(cn, -1, fd);
        return;
    }
    cn->fd = fd;
    if (connect(fd, (struct sockaddr *)&cn->addr, cn->addrlen) == 0) {
        tn__connector_finish(cn, fd, 0);
        return;
    }
    if (errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        cn->fd = -1;
        if (tn__connector_next(cn)) return;
        tn__connector_finish(cn, -1, e == ECONNREFUSED ? TN_EREFUSED : -e);
        return;
    }
    rc = tn_add_handler(cn->loop, fd, TN_WRITE, tn__connector_writable, cn);
    if (rc) {
        close(fd);
        cn->fd = -1;
        tn__connector_finish(cn, -1, rc);
    }
}

static void tn__connector_resolved(tn_future *f, void *arg) {
    tn__connector *cn = (tn__connector *)arg;
    int err = tn_future_error(f);
    tn__resolve_job *j = (tn__resolve_job *)tn_future_take(f);
    tn_future_release(f);
    cn->resolving = NULL;
    if (!err && j) {
        memcpy(&cn->addr, &j->addr, sizeof cn->addr);
        cn->addrlen = j->addrlen;
        memcpy(&cn->alt, &j->alt, sizeof cn->alt);
        cn->altlen = j->altlen;
    }
    tn__free(j);
    if (err) tn__connector_finish(cn, -1, err == TN_ECANCELLED ? err : TN_ERESOLVE);
    else tn__connector_connect(cn);
}

static void tn__connector_timeout(tn_loop *l, void *arg) {
    tn__connector *cn = (tn__connector *)arg;
    (void)l;
    cn->timer_armed = 0;
    tn__connector_finish(cn, -1, TN_ECONNECTTIMEOUT);
}

/* Starts connecting; cn->done is called exactly once (possibly before this
 * returns), unless tn__connector_abort is called first. */
static void tn__connector_start(tn__connector *cn, tn_loop *l, const char *host, int port, unsigned timeout_ms) {
    struct sockaddr_in *v4 = (struct sockaddr_in *)&cn->addr;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&cn->addr;
    char h[256];
    size_t hl = strlen(host);
    cn->loop = l;
    cn->fd = -1;
    cn->altlen = 0;
    cn->finished = 0;
    cn->timer_armed = 0;
    cn->resolving = NULL;
    memset(&cn->addr, 0, sizeof cn->addr);
    if (port <= 0 || port > 65535 || hl == 0 || hl >= sizeof h) {
        tn__connector_finish(cn, -1, TN_EINVAL);
        return;
    }
    /* "[::1]" is how a URL writes an IPv6 literal */
    if (host[0] == '[' && host[hl - 1] == ']') {
        memcpy(h, host + 1, hl - 2);
        h[hl - 2] = 0;
    } else {
        memcpy(h, host, hl + 1);
    }
    if (timeout_ms && tn_call_later(l, timeout_ms, tn__connector_timeout, cn, &cn->timer) == 0)
        cn->timer_armed = 1;
    if (inet_pton(AF_INET, h, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        cn->addrlen = sizeof *v4;
        tn__connector_connect(cn);
    } else if (inet_pton(AF_INET6, h, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        cn->addrlen = sizeof *v6;
        tn__connector_connect(cn);
    } else {
        tn__resolve_job *j = (tn__resolve_job *)tn__malloc(l, sizeof *j);
        if (!j) {
            tn__connector_finish(cn, -1, TN_ENOMEM);
            return;
        }
        memset(j, 0, sizeof *j);
        memcpy(j->host, h, strlen(h) + 1);
        j->port = port;
        cn->resolving = tn__offload(l, tn__resolve_work, j, tn_bytes_free);
        if (!cn->resolving) {
            tn__free(j);
            tn__connector_finish(cn, -1, TN_ENOMEM);
            return;
        }
        tn_future_on_done(cn->resolving, tn__connector_resolved, cn);
    }
}

/* Stops an unfinished connect without calling done. */
static void tn__connector_abort(tn__connector *cn) {
    if (cn->finished) return;
    cn->finished = 1;
    if (cn->timer_armed) tn_cancel_timer(cn->loop, cn->timer);
    cn->timer_armed = 0;
    if (cn->fd >= 0) {
        tn_remove_handler(cn->loop, cn->fd);
        close(cn->fd);
        cn->fd = -1;
    }
    if (cn->resolving) {
        tn_future_release(cn->resolving);
        cn->resolving = NULL;
    }
}

#endif /* the connector */

/* --------------------------------------------------------- user streams */
#ifndef TN_NO_TCP

#define TN__RD_NONE 0
#define TN__RD_UNTIL 1
#define TN__RD_BYTES 2
#define TN__RD_CLOSE 3

typedef struct tn__wwait {
    tn_future *f;
    uint64_t end; /* resolves once this many bytes were ever written */
} tn__wwait;

typedef struct tn__ustream {
    tn_stream s; /* first */
    int rd_kind;
    char delim[16];
    size_t delim_len, want, scanned;
    tn_future *rd;
    tn__wwait *ww;
    size_t nww, ww_cap;
    uint64_t queued, written;
    void (*on_close)(tn_stream *s, void *arg);
    void *close_arg;
    int failed; /* the error that closed it, or 0 */
    tn_future *secure; /* tn_stream_start_tls: resolves when the handshake is done */
} tn__ustream;

static void tn__ustream_settle_writes(tn__ustream *u, int err) {
    size_t i = 0, k = 0;
    for (i = 0; i < u->nww; i++) {
        if (err) tn_future_fail(u->ww[i].f, err);
        else if (u->ww[i].end <= u->written) tn_future_resolve(u->ww[i].f, NULL);
        else u->ww[k++] = u->ww[i];
    }
    u->nww = k;
}

/* Completes the pending read if the buffer now satisfies it. */
static void tn__ustream_try_read(tn__ustream *u) {
    tn__buf *in = u->s.io ? &u->s.io->in : NULL;
    size_t avail = tn__stream_avail(&u->s), take = 0;
    const char *data = avail ? in->data + in->off : NULL;
    int done = 0, err = 0;
    if (!u->rd) return;
    switch (u->rd_kind) {
    case TN__RD_UNTIL: {
        size_t i = u->scanned > u->delim_len ? u->scanned - u->delim_len : 0;
        for (; i + u->delim_len <= avail; i++) {
            if (memcmp(data + i, u->delim, u->delim_len) == 0) {
                take = i + u->delim_len;
                done = 1;
                break;
            }
        }
        u->scanned = avail;
        if (!done && avail >= u->want) err = TN_ETOOLARGE;
        if (done && take > u->want) {
            done = 0;
            err = TN_ETOOLARGE;
        }
        break;
    }
    case TN__RD_BYTES:
        if (avail >= u->want) {
            take = u->want;
            done = 1;
        }
        break;
    case TN__RD_CLOSE:
        if (avail > u->want) err = TN_ETOOLARGE;
        else if (u->s.flags & TN__S_EOF) {
            take = avail;
            done = 1;
        }
        break;
    default: break;
    }
    if (!done && !err && (u->s.flags & (TN__S_EOF | TN__S_CLOSED))) err = u->failed ? u->failed : TN_ECLOSED;
    if (done || err) {
        tn_future *f = u->rd;
        u->rd = NULL;
        u->rd_kind = TN__RD_NONE;
        if (err) {
            tn_future_fail(f, err);
        } else {
            tn_bytes *b = tn_bytes_new_in(u->s.loop, data, take);
            if (take) {
                in->off += take;
                if (in->off == in->len) tn__stream_in_release(&u->s);
            }
            if (b) tn_future_resolve_owned(f, b, tn_bytes_free);
            else tn_future_fail(f, TN_ENOMEM);
        }
    }
    /* Read only while a read waits (or, with nothing buffered, to notice a
     * close): the input holds at most what the read asked for. */
    tn__stream_set_reading(&u->s, u->rd != NULL || tn__stream_avail(&u->s) == 0);
}

/* What the pending read may need buffered: a delimited read up to its max
 * (and the delimiter), an exact read its n, a read to the close max + 1 (to
 * tell "too large"); with none pending, one buffer. */
static size_t tn__ustream_in_limit(tn_stream *s) {
    tn__ustream *u = (tn__ustream *)s;
    size_t want = u->rd ? u->want + (u->rd_kind == TN__RD_BYTES ? 0 : u->delim_len + 1) : 0;
    return want > TN_BUF_SIZE ? want : TN_BUF_SIZE;
}

static void tn__ustream_on_read(tn_stream *s) {
    tn__ustream *u = (tn__ustream *)s;
    tn__ustream_try_read(u);
    if ((s->flags & TN__S_EOF) && u->on_close) {
        void (*fn)(tn_stream *, void *) = u->on_close;
        u->on_close = NULL;
        fn(s, u->close_arg);
    }
}

static void tn__ustream_on_drain(tn_stream *s) {
    tn__ustream *u = (tn__ustream *)s;
    u->written = u->queued - tn__stream_pending(s);
    tn__ustream_settle_writes(u, 0);
}

static void tn__ustream_on_error(tn_stream *s, int err) {
    tn__ustream *u = (tn__ustream *)s;
    u->failed = err;
    if (u->secure) { /* the handshake failed */
        tn_future *f = u->secure;
        u->secure = NULL;
        tn_future_fail(f, err);
    }
    tn__ustream_settle_writes(u, err);
    tn__ustream_try_read(u);
    if (u->on_close) {
        void (*fn)(tn_stream *, void *) = u->on_close;
        u->on_close = NULL;
        fn(s, u->close_arg);
    }
}

static void tn__ustream_on_secure(tn_stream *s) {
    tn__ustream *u = (tn__ustream *)s;
    tn_future *f = u->secure;
    u->secure = NULL;
    if (f) tn_future_resolve(f, NULL);
}

static const tn__stream_ops tn__ustream_ops = {tn__ustream_on_read, tn__ustream_on_drain, tn__ustream_on_error,
                                               tn__ustream_in_limit, 0, tn__ustream_on_secure, NULL};

static tn_stream *tn__ustream_new(tn_loop *l, int fd) {
    tn__ustream *u = (tn__ustream *)tn__malloc(l, sizeof *u);
    if (!u) return NULL;
    memset(u, 0, sizeof *u);
    if (tn__stream_init(&u->s, l, fd, &tn__ustream_ops)) {
        tn__free(u);
        return NULL;
    }
    return &u->s;
}

static tn_future *tn__ustream_read(tn_stream *s, int kind, const char *delim, size_t n) {
    tn__ustream *u = (tn__ustream *)s;
    tn_future *f = tn_future_new(s->loop);
    if (!f) return NULL;
    if (u->rd) {
        tn_future_fail(f, TN_ESTATE);
        return f;
    }
    if (n > TN_STREAM_MAX_BUFFER) {
        tn_future_fail(f, TN_ETOOLARGE);
        return f;
    }
    u->delim_len = 0;
    if (kind == TN__RD_UNTIL) {
        size_t dl = strlen(delim);
        if (dl == 0 || dl > sizeof u->delim) {
            tn_future_fail(f, TN_EINVAL);
            return f;
        }
        memcpy(u->delim, delim, dl);
        u->delim_len = dl;
        u->scanned = 0;
    }
    u->rd = f;
    u->rd_kind = kind;
    u->want = n;
    tn__ustream_try_read(u);
    return f;
}

tn_future *tn_stream_read_until(tn_stream *s, const char *delim, size_t max) {
    return tn__ustream_read(s, TN__RD_UNTIL, delim, max);
}
tn_future *tn_stream_read_bytes(tn_stream *s, size_t n) { return tn__ustream_read(s, TN__RD_BYTES, NULL, n); }
tn_future *tn_stream_read_until_close(tn_stream *s, size_t max) {
    return tn__ustream_read(s, TN__RD_CLOSE, NULL, max);
}

tn_future *tn_stream_write(tn_stream *s, const void *data, size_t len) {
    tn__ustream *u = (tn__ustream *)s;
    tn_future *f = tn_future_new(s->loop);
    int rc;
    if (!f) return NULL;
    if (s->flags & TN__S_CLOSED) rc = u->failed ? u->failed : TN_ECLOSED;
    else if (tn__stream_pending(s) + len > TN_STREAM_MAX_BUFFER) rc = TN_EFULL;
    else if (tn__grow(s->loop, (void **)&u->ww, &u->ww_cap, u->nww + 1, sizeof *u->ww)) rc = TN_ENOMEM;
    else rc = tn__stream_queue(s, (const char *)data, len);
    if (rc) {
        tn_future_fail(f, rc);
        return f;
    }
    u->queued += len;
    u->ww[u->nww].f = f;
    u->ww[u->nww].end = u->queued;
    u->nww++;
    if (tn__stream_flush(s) == 0) tn__ustream_on_drain(s);
    return f;
}

void tn_stream_on_close(tn_stream *s, void (*fn)(tn_stream *s, void *arg), void *arg) {
    tn__ustream *u = (tn__ustream *)s;
    u->on_close = fn;
    u->close_arg = arg;
    tn__stream_set_reading(s, 1); /* to notice the close */
}

void tn_stream_close(tn_stream *s) {
    tn__ustream *u = (tn__ustream *)s;
    if (!s) return;
    tn__stream_close(s);
    if (u->secure) {
        tn_future_fail(u->secure, TN_ECLOSED);
        u->secure = NULL;
    }
    tn__ustream_settle_writes(u, TN_ECLOSED);
    if (u->rd) {
        tn_future_fail(u->rd, TN_ECLOSED);
        u->rd = NULL;
    }
    tn__stream_in_release(s);
    tn__free(u->ww);
    tn__free(u);
}

int tn_stream_fd(const tn_stream *s) { return s->fd; }

#if TN__TLS
tn_future *tn_stream_start_tls(tn_stream *s, tn_tls_ctx *ctx, const char *host) {
    tn__ustream *u = (tn__ustream *)s;
    tn_future *f = tn_future_new(s->loop);
    int rc;
    if (!f) return NULL;
    if (u->secure || (s->io && s->io->tls)) rc = TN_ESTATE;
    else if (s->flags & TN__S_CLOSED) rc = u->failed ? u->failed : TN_ECLOSED;
    else if (tn__stream_avail(s)) rc = TN_ESTATE; /* plaintext already read would be lost */
    else {
        if ((rc = tn__stream_start_tls(s, ctx, host, NULL)) == 0) {
            u->secure = f; /* settled by on_secure or on_error */
            return f;
        }
    }
    tn_future_fail(f, rc);
    return f;
}
#endif

/* tn_tcp_connect: a connector whose done resolves a future. */
typedef struct tn__tcp_connect {
    tn__connector cn;
    tn_future *f;
} tn__tcp_connect;

static void tn__tcp_connected(tn__connector *cn, int fd, int err) {
    tn__tcp_connect *tc = (tn__tcp_connect *)cn;
    tn_future *f = tc->f;
    tn_loop *l = cn->loop;
    tn__free(tc);
    if (err) {
        tn_future_fail(f, err);
    } else {
        tn_stream *s = tn__ustream_new(l, fd);
        if (!s) {
            close(fd);
            tn_future_fail(f, TN_ENOMEM);
        } else if (tn_future_resolve_owned(f, s, (tn_free_fn)tn_stream_close) != 0) {
            /* cancelled meanwhile: resolve freed it */
        }
    }
}

static void tn__tcp_connect_cancelled(tn_future *f, void *arg) {
    tn__tcp_connect *tc = (tn__tcp_connect *)arg;
    tn__connector_abort(&tc->cn);
    tn__free(tc);
    tn_future_fail(f, TN_ECANCELLED);
}

tn_future *tn_tcp_connect(tn_loop *l, const char *host, int port, unsigned timeout_ms) {
    tn__tcp_connect *tc = (tn__tcp_connect *)tn__malloc(l, sizeof *tc);
    tn_future *f = tn_future_new(l);
    if (!tc || !f) {
        tn__free(tc);
        if (f) {
            tn__future_abandon(f);
        }
        return NULL;
    }
    memset(tc, 0, sizeof *tc);
    tc->f = f;
    tc->cn.done = tn__tcp_connected;
    tn_future_on_cancel(f, tn__tcp_connect_cancelled, tc);
    tn__connector_start(&tc->cn, l, host ? host : "127.0.0.1", port, timeout_ms);
    return f;
}

/* A listener: the acceptor, and the user's callback. */
typedef struct tn__tcp_listener {
    tn__acceptor a; /* first: tn_tcp_unlisten finds it from the fd's handler */
    tn_accept_fn fn;
    void *arg;
} tn__tcp_listener;

static void tn__tcp_accepted(tn__acceptor *a, int fd) {
    tn__tcp_listener *tl = (tn__tcp_listener *)a;
    tn_stream *s = tn__ustream_new(a->loop, fd);
    if (!s) {
        close(fd);
        return;
    }
    tl->fn(s, tl->arg);
}

int tn_tcp_listen(tn_loop *l, const char *host, int port, tn_accept_fn fn, void *arg, int *listener_fd,
                  int *port_out) {
    tn__tcp_listener *tl;
    int fd, rc;
    if (!fn) return TN_EINVAL;
    tl = (tn__tcp_listener *)tn__malloc(l, sizeof *tl);
    if (!tl) return TN_ENOMEM;
    tl->fn = fn;
    tl->arg = arg;
    fd = tn__listen_socket(host, port, 511, 0, port_out);
    if (fd < 0) {
        tn__free(tl);
        return fd;
    }
    if ((rc = tn__acceptor_open(&tl->a, l, fd, tn__tcp_accepted, tl)) != 0) {
        close(fd);
        tn__free(tl);
        return rc;
    }
    if (listener_fd) *listener_fd = fd;
    return 0;
}

void tn_tcp_unlisten(tn_loop *l, int fd) {
    tn__tcp_listener *tl;
    if (fd < 0 || (size_t)fd >= l->handlers_cap || !l->handlers[fd].gen || l->handlers[fd].cb != tn__acceptor_io)
        return;
    tl = (tn__tcp_listener *)l->handlers[fd].arg;
    if (tl->a.fn != tn__tcp_accepted) return; /* an HTTP server's */
    tn__acceptor_close(&tl->a);
    tn__free(tl);
}

#endif /* TN_NO_TCP */
#endif /* the streams layer */

/* tornado.h HTTP/1.1 message parser: implementation (declared above).
 *
 * How a head is parsed:
 *   1. tn__http_scan() walks the bytes not seen by the previous call
 *      (prev_len onwards) looking for the empty line that ends the head.
 *      Every check it makes at byte i depends on buf[0..i] only and the walk
 *      stops at the first failing byte, so whatever the split of the input
 *      the same byte gives the same answer: one-byte feeding and whole-buffer
 *      parsing cannot disagree. Its checks are the ones a prefix can prove:
 *      bytes that are never valid in a head, line endings, the size limit
 *      and an over-long request-target.
 *   2. Once the head is complete it is parsed once, front to back: start
 *      line, field lines, then the framing the fields imply.
 * The trailer section of a chunked body is the same kind of block (field
 * lines ended by an empty line), so the decoder reuses the scan and the
 * field-line parser.
 */
/* The largest value an int holds: parsers return lengths as int. */
#define TN__HTTP_INT_MAX ((size_t)((unsigned)-1 >> 1))

/* ---- Character classes (RFC 9110 section 5.6.2, RFC 5234 appendix B) ---- */

static int tn__http_is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static int tn__http_is_alpha(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* Character classes as one table: tchar (RFC 9110 section 5.6.2) is asked
 * for every byte of every method and field name, and a host character
 * (uri-host and port, RFC 3986) for every byte of Host, so each must cost
 * a load, not a strchr. */
#define TN__CT_TCHAR 1u
#define TN__CT_HOST 2u
static const unsigned char tn__http_ctype[256] = {
    /* 0x00-0x1f: controls */
    0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0,
    /* SP !  "  #  $  %  &  '   (  )  *  +  ,  -  .  / */
    0,3,0,1,3,3,3,3, 2,2,3,3,2,3,3,0,
    /* 0-9 : ; < = > ? */
    3,3,3,3,3,3,3,3, 3,3,2,2,0,2,0,0,
    /* @ A-O */
    0,3,3,3,3,3,3,3, 3,3,3,3,3,3,3,3,
    /* P-Z [ \ ] ^ _ */
    3,3,3,3,3,3,3,3, 3,3,3,2,0,2,1,3,
    /* ` a-o */
    1,3,3,3,3,3,3,3, 3,3,3,3,3,3,3,3,
    /* p-z { | } ~ DEL */
    3,3,3,3,3,3,3,3, 3,3,3,0,1,0,3,0,
    /* 0x80-0xff: none (zero-filled) */
};
static int tn__http_is_tchar(unsigned char c) { return tn__http_ctype[c] & TN__CT_TCHAR; }

/* Visible ASCII: what a request-target is made of. */
static int tn__http_is_vchar(unsigned char c) { return c > 0x20 && c < 0x7f; }

/* field-content and reason-phrase: VCHAR, SP, HTAB and obs-text (>= 0x80). */
static int tn__http_is_text(unsigned char c) {
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static int tn__http_is_ows(unsigned char c) { return c == ' ' || c == '\t'; }

static int tn__http_hex_value(unsigned char c) {
    if (tn__http_is_digit(c)) return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static unsigned char tn__http_lower(unsigned char c) {
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + ('a' - 'A')) : c;
}

/* a[0..n) equals b[0..n), ignoring ASCII case. */
static int tn__http_ieq_n(const char *a, const char *b, size_t n) {
    size_t k;
    for (k = 0; k < n; k++)
        if (tn__http_lower((unsigned char)a[k]) != tn__http_lower((unsigned char)b[k])) return 0;
    return 1;
}

/* s[0..n) equals the NUL-terminated lit, ignoring ASCII case. inline: the
 * field checks of tn__http_collect want it inlined, which gcc stopped
 * doing once it called tn__http_ieq_n (+50 instructions a request). */
static inline int tn__http_ieq(const char *s, size_t n, const char *lit) {
    return strlen(lit) == n && tn__http_ieq_n(s, lit, n); /* most end at the length */
}

/* s[0..n) equals lit exactly (methods are case-sensitive). */
static int tn__http_eq(const char *s, size_t n, const char *lit) {
    return strlen(lit) == n && memcmp(s, lit, n) == 0;
}

/* ---- Limits ---- */

static tn_http_limits tn__http_limits_or_defaults(const tn_http_limits *in) {
    tn_http_limits l;
    l.max_head = (in && in->max_head) ? in->max_head : TN_HTTP_MAX_HEAD;
    l.max_target = (in && in->max_target) ? in->max_target : TN_HTTP_MAX_TARGET;
    l.max_headers = (in && in->max_headers) ? in->max_headers : TN_HTTP_MAX_HEADERS;
    if (l.max_head > TN__HTTP_INT_MAX) l.max_head = TN__HTTP_INT_MAX;
    return l;
}

/* ---- Finding the end of a block of lines ---- */

/* What tn__http_scan() looks for. */
typedef struct tn__http_scan_opts {
    size_t max_bytes;  /* reaching this many bytes without the end -> 431 */
    size_t max_target; /* request heads: the target limit; 0 otherwise */
    int start_line;    /* the block opens with a start line, so empty lines
                          before it are skipped (RFC 9112 section 2.2)
                          instead of ending the block */
} tn__http_scan_opts;

/* 1 when the line ended by the LF at buf[lf] is empty. The scan has checked
 * that every LF up to here follows a CR, so "empty" means the CR is the
 * first byte of the line. */
static int tn__http_empty_line_at(const char *buf, size_t lf) {
    return lf == 1 || (lf >= 2 && buf[lf - 2] == '\n');
}

/* 1 when buf[i] is the first byte of the start line. While the scan runs,
 * an empty line after a non-empty one would have ended the block, so every
 * empty line seen so far is one of the skipped leading ones. */
static int tn__http_at_start_line(const char *buf, size_t i) {
    return i == 0 || (buf[i - 1] == '\n' && tn__http_empty_line_at(buf, i - 1));
}

/* 1 when the LF at buf[lf] ends the block. */
static int tn__http_ends_block(const char *buf, size_t lf, int start_line) {
    if (!tn__http_empty_line_at(buf, lf)) return 0;
    if (!start_line) return 1;
    /* Only an empty line after the start line ends a head. */
    return lf >= 3 && !tn__http_empty_line_at(buf, lf - 2);
}

/* The scan is at byte i and buf[sp] = SP with i - sp - 1 == max_target:
 * 1 when that SP ends the method of the request line and buf[sp+1..i] are
 * all target bytes, i.e. the target has just grown past max_target.
 * Cost: the forward loop stops at the next non-VCHAR (a SP at the latest),
 * so the loops of different SPs cover disjoint bytes; the backward loop runs
 * only after a run of max_target VCHARs. The scan stays O(n) overall. */
static int tn__http_target_overflows(const char *buf, size_t sp, size_t i) {
    size_t k, s = sp;
    for (k = sp + 1; k <= i; k++)
        if (!tn__http_is_vchar((unsigned char)buf[k])) return 0;
    while (s > 0 && tn__http_is_tchar((unsigned char)buf[s - 1])) s--;
    return s < sp && tn__http_at_start_line(buf, s);
}

/* 1 when byte i would extend the request-target of an unfinished request
 * line ("method SP target-so-far"). Run once, when the head hits max_head:
 * a long target then deserves 414, not 431. */
static int tn__http_in_target(const char *buf, size_t i) {
    size_t s = i, k;
    while (s > 0 && buf[s - 1] != '\n') s--;
    if (!tn__http_at_start_line(buf, s)) return 0;
    for (k = s; k < i && tn__http_is_tchar((unsigned char)buf[k]); k++) {}
    if (k == s || k == i || buf[k] != ' ') return 0;
    for (k++; k < i; k++)
        if (!tn__http_is_vchar((unsigned char)buf[k])) return 0;
    return 1;
}

/* How many of the 8 bytes at p, from the first, are surely text without
 * HTAB (no byte below 0x20 or 0x7f): 8 when all are. Fewer can be an
 * underestimate (a caller then tests bytewise from there), never more. */
static size_t tn__http_text8(const char *p) {
    uint64_t x, m;
    memcpy(&x, p, 8);
    m = ((x - 0x2020202020202020u) & ~x & 0x8080808080808080u) |
        (((x ^ 0x7f7f7f7f7f7f7f7fu) - 0x0101010101010101u) & ~(x ^ 0x7f7f7f7f7f7f7f7fu) & 0x8080808080808080u);
    if (!m) return 8;
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    /* A borrow only runs from a flagged byte upward, to bytes later in
     * memory: the lowest flag, the first byte, is exact. */
    return (size_t)__builtin_ctzll(m) >> 3;
#elif defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    /* Big-endian: the first byte in memory is the most significant, and a
     * borrow can flag text bytes before the real one: the first flag is at
     * or before it, so it is a safe underestimate. */
    return (size_t)__builtin_clzll(m) >> 3;
#else
    return 0;
#endif
}

/* Looks for the empty line ending a block (head or trailer section) in
 * buf[0..len), examining bytes from `from` on (the bytes before were passed
 * by an earlier call; the checks at byte i read only buf[0..i]).
 * Returns the block length including the final CRLF, TN_EAGAIN, or the
 * error of the first byte that proves the block invalid. */
static int tn__http_scan(const char *buf, size_t len, size_t from,
                         const tn__http_scan_opts *o) {
    size_t i = from, fast_end = len;
    const int start_line = o->start_line;
    /* The fast loop stops before any byte a limit could reject. */
    if (fast_end > o->max_bytes) fast_end = o->max_bytes;
    if (o->max_target && fast_end > o->max_target + 1) fast_end = o->max_target + 1;
    while (i < len) {
        unsigned char c;
        /* Fast path for the common byte: text (so neither CR nor LF), not
         * after a CR, inside the limits, and not a non-token at the start of
         * the start line. Every check below would pass for it. Only the
         * first byte can follow a CR: a CR itself is not text. */
        if (i == 0 || buf[i - 1] != '\r') {
            size_t run = i;
            while (i < fast_end) {
                if (i != run && fast_end - i >= 8) {
                    size_t k = tn__http_text8(buf + i);
                    i += k;
                    if (k == 8) continue;
                }
                c = (unsigned char)buf[i];
                if (!tn__http_is_text(c)) break;
                /* Inside the run the previous byte is text, never the LF
                 * that starts a line: only its first byte can be there. */
                if (i == run && start_line && !(tn__http_ctype[c] & TN__CT_TCHAR) && tn__http_at_start_line(buf, i))
                    break;
                i++;
            }
            if (i >= len) break;
        }
        /* The full checks, for one byte. */
        c = (unsigned char)buf[i];
        if (i >= o->max_bytes)
            return (o->max_target && tn__http_in_target(buf, i)) ? TN_EURILONG
                                                                 : TN_EHEADERS;
        /* RFC 9112 section 2.2: a bare CR is invalid; we also refuse a bare
         * LF (see the decl header) so lines end one way only. */
        if (i > 0 && buf[i - 1] == '\r' && c != '\n') return TN_EMALFORMED;
        if (c == '\n') {
            if (i == 0 || buf[i - 1] != '\r') return TN_EMALFORMED;
            if (tn__http_ends_block(buf, i, start_line)) return (int)(i + 1);
            i++;
            continue;
        }
        /* No element of a head admits control bytes other than HTAB. */
        if (c != '\r' && c != '\t' && (c < 0x20 || c == 0x7f)) return TN_EMALFORMED;
        /* Methods and "HTTP" are tokens: anything else is not HTTP (a TLS
         * ClientHello on a plain port, say), no need to wait for more. */
        if (start_line && c != '\r' && !tn__http_is_tchar(c) &&
            tn__http_at_start_line(buf, i))
            return TN_EMALFORMED;
        if (o->max_target && i > o->max_target &&
            buf[i - o->max_target - 1] == ' ' &&
            tn__http_target_overflows(buf, i - o->max_target - 1, i))
            return TN_EURILONG;
        i++;
    }
    return TN_EAGAIN;
}

/* Finds the end of a request or response head. */
static int tn__http_find_head(const char *buf, size_t len, size_t prev_len,
                              const tn_http_limits *lim, int is_request) {
    tn__http_scan_opts o;
    o.max_bytes = lim->max_head;
    o.max_target = is_request ? lim->max_target : 0;
    o.start_line = 1;
    return tn__http_scan(buf, len, prev_len <= len ? prev_len : 0, &o);
}

/* ---- Start lines (RFC 9112 sections 2.3, 3, 4) ---- */

/* Skips the empty lines before the start line. */
static const char *tn__http_skip_empty_lines(const char *p, const char *end) {
    while (end - p >= 2 && p[0] == '\r' && p[1] == '\n') p += 2;
    return p;
}

/* HTTP-version = "HTTP/" DIGIT "." DIGIT, then the byte `term`, consumed.
 * Syntax is checked before the major version, so "HTTP/2.00" is malformed
 * while "HTTP/2.0" is a version we do not support. */
static int tn__http_parse_version(const char **pp, const char *end, char term,
                                  int *minor) {
    const char *p = *pp;
    if (end - p < 9 || memcmp(p, "HTTP/", 5) != 0 ||
        !tn__http_is_digit((unsigned char)p[5]) || p[6] != '.' ||
        !tn__http_is_digit((unsigned char)p[7]) || p[8] != term)
        return TN_EMALFORMED;
    if (p[5] != '1') return TN_EVERSION;
    *minor = p[7] != '0'; /* 1.x for x > 1 speaks 1.1 to us (section 2.3) */
    *pp = p + 9;
    return 0;
}

/* request-line = method SP request-target SP HTTP-version CRLF */
static int tn__http_parse_request_line(const char **pp, const char *end,
                                       tn_http_message *m, size_t max_target) {
    const char *p = *pp, *start = p;
    int rc;
    while (p < end && tn__http_is_tchar((unsigned char)*p)) p++;
    if (p == start || p == end || *p != ' ') return TN_EMALFORMED;
    m->method = start;
    m->method_len = (size_t)(p - start);
    start = ++p;
    while (p < end && tn__http_is_vchar((unsigned char)*p)) p++;
    if (p == start || p == end || *p != ' ') return TN_EMALFORMED;
    /* The scan reports this first; kept so this function is right alone. */
    if ((size_t)(p - start) > max_target) return TN_EURILONG;
    m->target = start;
    m->target_len = (size_t)(p - start);
    p++;
    rc = tn__http_parse_version(&p, end, '\r', &m->version_minor);
    if (rc) return rc;
    *pp = p + 1; /* the LF, which the scan proved follows every CR */
    return 0;
}

/* status-line = HTTP-version SP status-code SP [ reason-phrase ] CRLF,
 * also accepting no SP at all after the status code. */
static int tn__http_parse_status_line(const char **pp, const char *end,
                                      tn_http_message *m) {
    const char *p = *pp;
    int rc = tn__http_parse_version(&p, end, ' ', &m->version_minor), k;
    if (rc) return rc;
    if (end - p < 4) return TN_EMALFORMED;
    m->status = 0;
    for (k = 0; k < 3; k++) {
        if (!tn__http_is_digit((unsigned char)p[k])) return TN_EMALFORMED;
        m->status = m->status * 10 + (p[k] - '0');
    }
    /* RFC 9110 section 15: valid codes are 100..599. */
    if (m->status < 100 || m->status > 599) return TN_EMALFORMED;
    p += 3;
    if (*p == ' ') p++;
    else if (*p != '\r') return TN_EMALFORMED;
    m->reason = p;
    while (p < end && *p != '\r') {
        if (!tn__http_is_text((unsigned char)*p)) return TN_EMALFORMED;
        p++;
    }
    if (p == end) return TN_EMALFORMED;
    m->reason_len = (size_t)(p - m->reason);
    *pp = p + 2;
    return 0;
}

/* ---- Field lines (RFC 9112 section 5, RFC 9110 section 5.5) ---- */

/* Parses field lines from p up to and including the empty line that ends
 * end (the block tn__http_scan() found). Stores them in out when it is not
 * NULL; more than max lines is TN_EHEADERS. Used for heads and trailers. */
static int tn__http_parse_fields(const char *p, const char *end,
                                 tn_http_header *out, size_t max,
                                 size_t *count) {
    size_t n = 0;
    *count = 0;
    while (p < end && *p != '\r') {
        const char *name = p, *value, *value_end;
        /* A line starting with whitespace is obs-fold, or whitespace before
         * the first field: both rejected (sections 2.2 and 5.2). */
        while (p < end && tn__http_is_tchar((unsigned char)*p)) p++;
        /* Whitespace between name and colon is a 400 (section 5.1). */
        if (p == name || p == end || *p != ':') return TN_EMALFORMED;
        if (n == max) return TN_EHEADERS;
        if (out) {
            out[n].name = name;
            out[n].name_len = (size_t)(p - name);
        }
        p++;
        while (p < end && tn__http_is_ows((unsigned char)*p)) p++;
        /* The scan that found this block already refused every control
         * byte but HTAB and CRLF, so the value is text up to its CR. */
        value = p;
        p = (const char *)memchr(p, '\r', (size_t)(end - p));
        if (!p) return TN_EMALFORMED; /* cannot happen after the scan */
        value_end = p;
        while (value_end > value && tn__http_is_ows((unsigned char)value_end[-1])) value_end--;
        if (out) {
            out[n].value = value;
            out[n].value_len = (size_t)(value_end - value);
        }
        n++;
        p += 2; /* CRLF */
    }
    if (end - p != 2) return TN_EMALFORMED; /* cannot happen after the scan */
    *count = n;
    return 0;
}

/* ---- Field values the framing depends on ---- */

/* The next element of a comma-separated list (RFC 9110 section 5.6.1),
 * trimmed of OWS. Empty elements are skipped; a comma inside a
 * quoted-string does not split. Returns 0 when none is left. */
static int tn__http_list_next(const char **pp, const char *end,
                              const char **el, size_t *el_len) {
    const char *p = *pp, *start, *stop;
    int quoted = 0;
    while (p < end && (*p == ',' || tn__http_is_ows((unsigned char)*p))) p++;
    if (p == end) {
        *pp = p;
        return 0;
    }
    for (start = p; p < end && (quoted || *p != ','); p++) {
        if (quoted && *p == '\\' && p + 1 < end) p++;
        else if (*p == '"') quoted = !quoted;
    }
    for (stop = p; stop > start && tn__http_is_ows((unsigned char)stop[-1]); stop--) {}
    *el = start;
    *el_len = (size_t)(stop - start);
    *pp = p;
    return 1;
}

/* Content-Length = 1*DIGIT, at most 2^63-1 (RFC 9110 section 8.6). */
static int tn__http_parse_length(const char *s, size_t n, int64_t *out) {
    int64_t v = 0;
    size_t k;
    if (n == 0) return TN_EMALFORMED;
    for (k = 0; k < n; k++) {
        int d;
        if (!tn__http_is_digit((unsigned char)s[k])) return TN_EMALFORMED;
        d = s[k] - '0';
        if (v > (INT64_MAX - d) / 10) return TN_EMALFORMED;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* The facts about a message's fields that decide its framing. */
typedef struct tn__http_facts {
    int64_t content_length; /* -1: no Content-Length */
    int te_fields;          /* Transfer-Encoding field lines */
    int te_chunked;         /* chunked codings in them */
    int te_last_chunked;    /* the last coding is chunked */
    int te_other;           /* some coding other than chunked */
    int conn_close, conn_keep_alive, conn_upgrade;
    int expect_continue;
    int upgrade_field; /* a non-empty Upgrade field */
    size_t host_count;
    const char *host;
    size_t host_len;
} tn__http_facts;

/* Content-Length fields may repeat, and hold a list, if every value is the
 * same (RFC 9110 section 8.6); anything else is unrecoverable framing. */
static int tn__http_add_content_length(tn__http_facts *f, const char *p,
                                       const char *end) {
    const char *el;
    size_t n;
    int any = 0;
    while (tn__http_list_next(&p, end, &el, &n)) {
        int64_t v;
        if (tn__http_parse_length(el, n, &v)) return TN_EMALFORMED;
        if (f->content_length >= 0 && v != f->content_length) return TN_EMALFORMED;
        f->content_length = v;
        any = 1;
    }
    return any ? 0 : TN_EMALFORMED;
}

/* transfer-coding = token *( OWS ";" OWS transfer-parameter ) */
static int tn__http_add_transfer_coding(tn__http_facts *f, const char *el,
                                        size_t n) {
    size_t k = 0, name_len;
    while (k < n && tn__http_is_tchar((unsigned char)el[k])) k++;
    name_len = k;
    while (k < n && tn__http_is_ows((unsigned char)el[k])) k++;
    if (name_len == 0 || (k < n && el[k] != ';')) return TN_EMALFORMED;
    if (tn__http_ieq(el, name_len, "chunked")) {
        /* chunked has no parameters, and is applied once (section 7). */
        if (k < n || f->te_chunked) return TN_EMALFORMED;
        f->te_chunked = f->te_last_chunked = 1;
    } else {
        f->te_other = 1;
        f->te_last_chunked = 0;
    }
    return 0;
}

/* A field name (tchars only, as the parsers store them) equals lit, a
 * lowercase name of n bytes, ignoring case, 8 bytes a compare. Among
 * tchars only a letter changes under "| 0x20" (to its lowercase) and no
 * other byte becomes a letter, a digit or '-': so one OR folds the case. */
static inline int tn__http_name_is(const char *name, const char *lit, size_t n) {
    uint64_t a, b;
    for (; n >= 8; name += 8, lit += 8, n -= 8) {
        memcpy(&a, name, 8);
        memcpy(&b, lit, 8);
        if ((a | 0x2020202020202020u) != b) return 0;
    }
    a = b = 0;
    memcpy(&a, name, n);
    memcpy(&b, lit, n);
    return (a | 0x2020202020202020u) == (b | 0x2020202020202020u); /* zero padding folds alike */
}

/* Gathers the facts from m's fields, in field order. */
static int tn__http_collect(const tn_http_message *m, tn__http_facts *f) {
    size_t i;
    memset(f, 0, sizeof *f);
    f->content_length = -1;
    for (i = 0; i < m->num_headers; i++) {
        const tn_http_header *h = &m->headers[i];
        const char *p = h->value, *end = h->value + h->value_len, *el;
        size_t n;
        int rc = 0;
        /* The fields that matter have distinct lengths: one compare of
         * numbers dismisses most names, and picks the one name to check. */
        switch (h->name_len) {
        case 14:
            if (tn__http_name_is(h->name, "content-length", 14)) rc = tn__http_add_content_length(f, p, end);
            break;
        case 17:
            if (!tn__http_name_is(h->name, "transfer-encoding", 17)) break;
            /* The codings of several fields form one list, in order. */
            f->te_fields++;
            while (rc == 0 && tn__http_list_next(&p, end, &el, &n)) rc = tn__http_add_transfer_coding(f, el, n);
            break;
        case 10:
            if (!tn__http_name_is(h->name, "connection", 10)) break;
            while (tn__http_list_next(&p, end, &el, &n)) {
                if (tn__http_ieq(el, n, "close")) f->conn_close = 1;
                else if (tn__http_ieq(el, n, "keep-alive")) f->conn_keep_alive = 1;
                else if (tn__http_ieq(el, n, "upgrade")) f->conn_upgrade = 1;
            }
            break;
        case 6:
            if (!tn__http_name_is(h->name, "expect", 6)) break;
            while (tn__http_list_next(&p, end, &el, &n))
                if (tn__http_ieq(el, n, "100-continue")) f->expect_continue = 1;
            break;
        case 7:
            if (tn__http_name_is(h->name, "upgrade", 7) && h->value_len) f->upgrade_field = 1;
            break;
        case 4:
            if (!tn__http_name_is(h->name, "host", 4)) break;
            f->host_count++;
            f->host = h->value;
            f->host_len = h->value_len;
            break;
        default: break;
        }
        if (rc) return rc;
    }
    return 0;
}

/* RFC 9112 section 9.3: 1.1 persists unless closed; 1.0 only if asked. */
static int tn__http_keep_alive(int minor, const tn__http_facts *f) {
    if (f->conn_close) return 0;
    return minor ? 1 : f->conn_keep_alive;
}

/* ---- Request targets and Host (RFC 9112 section 3.2, RFC 9110 4.2) ---- */

/* uri-host [ ":" port ] characters: reg-name (unreserved, pct-encoded,
 * sub-delims), IP-literal brackets and the port colon. */
static int tn__http_is_host_char(unsigned char c) { return tn__http_ctype[c] & TN__CT_HOST; }

static int tn__http_valid_host(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t k = 0;
    /* Four lookups a test: every Host is checked, most are 9-20 bytes. */
    for (; n - k >= 4; k += 4)
        if (!(tn__http_ctype[u[k]] & tn__http_ctype[u[k + 1]] & tn__http_ctype[u[k + 2]] &
              tn__http_ctype[u[k + 3]] & TN__CT_HOST))
            return 0;
    for (; k < n; k++)
        if (!tn__http_is_host_char(u[k])) return 0;
    return 1;
}

/* authority-form = uri-host ":" port, the port required (RFC 9110 9.3.6). */
static int tn__http_valid_authority_form(const char *s, size_t n) {
    size_t colon = n, k;
    while (colon > 0 && s[colon - 1] != ':') colon--;
    if (colon < 2 || colon == n) return 0; /* no host, no colon or no port */
    for (k = colon; k < n; k++)
        if (!tn__http_is_digit((unsigned char)s[k])) return 0;
    return tn__http_valid_host(s, colon - 1);
}

/* absolute-form = absolute-URI, which we require to have an authority
 * ("scheme://authority..."): a URI without one names no server to talk to,
 * and "host:port" would otherwise pass for scheme "host" (authority-form is
 * CONNECT's alone). *auth gets the authority, which replaces Host
 * (section 3.2.2). */
static int tn__http_check_absolute_form(const char *s, size_t n,
                                        const char **auth, size_t *auth_len) {
    size_t k = 1, a;
    int http;
    if (!tn__http_is_alpha((unsigned char)s[0])) return TN_EMALFORMED;
    while (k < n && (tn__http_is_alpha((unsigned char)s[k]) ||
                     tn__http_is_digit((unsigned char)s[k]) || s[k] == '+' ||
                     s[k] == '-' || s[k] == '.'))
        k++;
    if (k == n || s[k] != ':') return TN_EMALFORMED;
    if (n - k < 3 || s[k + 1] != '/' || s[k + 2] != '/') return TN_EMALFORMED;
    for (a = k + 3; a < n && s[a] != '/' && s[a] != '?' && s[a] != '#'; a++) {}
    *auth = s + k + 3;
    *auth_len = a - (k + 3);
    /* '@' is no host char: userinfo is treated as an error, as RFC 9110
     * 4.2.4 advises (it serves to disguise the real host). */
    if (!tn__http_valid_host(*auth, *auth_len)) return TN_EMALFORMED;
    /* RFC 9110 4.2.1: an http(s) URI with an empty host is invalid. */
    http = tn__http_ieq(s, k, "http") || tn__http_ieq(s, k, "https");
    if (http && (*auth_len == 0 || **auth == ':')) return TN_EMALFORMED;
    return 0;
}

/* Which target forms a method may use: CONNECT only authority-form, "*"
 * only with OPTIONS, the others origin-form or absolute-form. */
static int tn__http_check_target(const tn_http_message *m, const char **auth,
                                 size_t *auth_len) {
    const char *t = m->target;
    size_t n = m->target_len;
    int connect = tn__http_eq(m->method, m->method_len, "CONNECT");
    *auth = NULL;
    *auth_len = 0;
    if (connect) return tn__http_valid_authority_form(t, n) ? 0 : TN_EMALFORMED;
    if (t[0] == '/') return 0;
    if (n == 1 && t[0] == '*')
        return tn__http_eq(m->method, m->method_len, "OPTIONS") ? 0 : TN_EMALFORMED;
    return tn__http_check_absolute_form(t, n, auth, auth_len);
}

/* ---- Framing (RFC 9112 section 6) ---- */

static int tn__http_request_framing(tn_http_message *m, const tn__http_facts *f,
                                    const char *auth, size_t auth_len) {
    int v11 = m->version_minor == 1;
    /* Section 3.2: one Host, required in 1.1, never repeated. */
    if (f->host_count > 1 || (v11 && f->host_count == 0)) return TN_EMALFORMED;
    if (f->host_count && !tn__http_valid_host(f->host, f->host_len))
        return TN_EMALFORMED;
    m->host = auth ? auth : f->host;
    m->host_len = auth ? auth_len : f->host_len;
    m->content_length = f->content_length;
    if (f->te_fields) {
        /* Section 6.1: TE in a 1.0 request is faulty framing; TE with
         * Content-Length is a smuggling attempt; chunked must come last or
         * the length is unknowable. All 400; the server then closes. */
        if (!v11 || f->content_length >= 0 || !f->te_last_chunked)
            return TN_EMALFORMED;
        if (f->te_other) return TN_ENOTIMPL; /* we decode no other coding */
        m->chunked = 1;
    }
    m->keep_alive = tn__http_keep_alive(m->version_minor, f);
    /* RFC 9110 10.1.1 and 7.8: 1.0 requests' Expect and Upgrade are ignored. */
    m->expect_continue = v11 && f->expect_continue;
    m->upgrade = v11 && f->conn_upgrade && f->upgrade_field;
    return 0;
}

static void tn__http_response_framing(tn_http_message *m, const tn__http_facts *f,
                                      const char *request_method) {
    size_t mlen = request_method ? strlen(request_method) : 0;
    int head = request_method && tn__http_eq(request_method, mlen, "HEAD");
    int connect = request_method && tn__http_eq(request_method, mlen, "CONNECT");
    int tunnel = m->status == 101 || (connect && m->status / 100 == 2);
    m->keep_alive = tn__http_keep_alive(m->version_minor, f);
    m->content_length = -1;
    if (tunnel || head || m->status < 200 || m->status == 204 || m->status == 304) {
        /* Section 6.3 rules 1 and 2: no body whatever the fields say. */
        m->content_length = 0;
        m->upgrade = tunnel;
        if (tunnel) m->keep_alive = 0;
    } else if (f->te_fields) {
        /* Rule 3: TE overrides Content-Length, but both at once smells of
         * smuggling, so do not reuse the connection. A 1.0 message with TE
         * has faulty framing (section 6.1): read it to the close. */
        if (m->version_minor == 1 && f->te_last_chunked) m->chunked = 1;
        else m->close_delimited = 1;
        if (f->content_length >= 0) m->keep_alive = 0;
    } else if (f->content_length >= 0) {
        m->content_length = f->content_length;
    } else {
        m->close_delimited = 1; /* rule 8 */
    }
    if (m->close_delimited) m->keep_alive = 0;
}

/* ---- Heads ---- */

static void tn__http_message_init(tn_http_message *m, tn_http_header *headers) {
    memset(m, 0, sizeof *m);
    m->headers = headers;
    m->content_length = -1;
}

/* How many field lines a head may store: the caller's array and the
 * limit; framing is read from the stored fields, so no array, no room. */
static size_t tn__http_field_room(const tn_http_header *headers, size_t max_headers, const tn_http_limits *lim) {
    return headers ? (max_headers < lim->max_headers ? max_headers : lim->max_headers) : 0;
}

/* One walk of a head that came whole, for the usual message: the start
 * line, then "name: value CRLF" lines with SP-only OWS, then CRLF, within
 * the limits. Each line is found once (its end by tn__http_text8, 8 bytes
 * a step) and its field stored as it goes, where the strict path scans the
 * head, then parses the start line, then walks the fields again. These
 * return the head's length, or 0 for anything else: an incomplete head, a
 * limit reached, a leading empty line, HTAB, a control byte or any other
 * byte the strict path must judge. The strict path then runs and gives its
 * answer; for every head these accept, that answer is the same (the parser
 * tests compare the two on every table case: whole input here, byte by
 * byte there; fuzz_http compares them on random heads). */

/* The field lines from p, and the empty line ending them. */
static int tn__http_fields_fast(const char *buf, const char *p, const char *end, tn_http_message *m,
                                size_t max) {
    size_t n = 0;
    for (;;) {
        const char *name = p, *colon, *value, *vend;
        if (end - p < 2) return 0;
        if (*p == '\r') {
            if (p[1] != '\n') return 0;
            m->num_headers = n;
            return (int)(p + 2 - buf);
        }
        while (p < end && tn__http_is_tchar((unsigned char)*p)) p++;
        if (p == name || p == end || *p != ':' || n == max) return 0;
        for (colon = p++; p < end && *p == ' '; p++) {}
        value = p;
        while (end - p >= 8) {
            size_t k = tn__http_text8(p);
            p += k;
            if (k < 8) break;
        }
        while (p < end && (unsigned char)*p >= 0x20 && *p != 0x7f) p++;
        if (end - p < 2 || p[0] != '\r' || p[1] != '\n') return 0;
        for (vend = p; vend > value && vend[-1] == ' '; vend--) {}
        m->headers[n].name = name;
        m->headers[n].name_len = (size_t)(colon - name);
        m->headers[n].value = value;
        m->headers[n].value_len = (size_t)(vend - value);
        n++;
        p += 2;
    }
}

/* "METHOD SP target SP HTTP/1.x CRLF" and the fields. */
static int tn__http_request_fast(const char *buf, size_t len, tn_http_message *m, size_t max,
                                 const tn_http_limits *lim) {
    const char *p = buf, *end, *start;
    if (len < 16) return 0; /* no request is shorter; and buf may be NULL with len 0 */
    end = buf + (len < lim->max_head ? len : lim->max_head);
    while (p < end && tn__http_is_tchar((unsigned char)*p)) p++;
    if (p == buf || p == end || *p != ' ') return 0;
    m->method = buf;
    m->method_len = (size_t)(p - buf);
    start = ++p;
    while (p < end && tn__http_is_vchar((unsigned char)*p)) p++;
    if (p == start || (size_t)(p - start) > lim->max_target || end - p < 11 || *p != ' ' ||
        memcmp(p + 1, "HTTP/1.", 7) != 0 || (p[8] != '1' && p[8] != '0') || p[9] != '\r' || p[10] != '\n')
        return 0;
    m->target = start;
    m->target_len = (size_t)(p - start);
    m->version_minor = p[8] == '1';
    return tn__http_fields_fast(buf, p + 11, end, m, max);
}

/* "HTTP/1.x SP 3DIGIT SP reason CRLF" and the fields. */
static int tn__http_response_fast(const char *buf, size_t len, tn_http_message *m, size_t max,
                                  const tn_http_limits *lim) {
    const char *p, *end;
    int k;
    if (len < 15) return 0; /* no response is shorter; and buf may be NULL with len 0 */
    end = buf + (len < lim->max_head ? len : lim->max_head);
    if (end - buf < 15 || memcmp(buf, "HTTP/1.", 7) != 0 || (buf[7] != '1' && buf[7] != '0') || buf[8] != ' ' ||
        buf[12] != ' ')
        return 0;
    p = buf + 13;
    m->status = 0;
    for (k = 9; k < 12; k++) {
        if (!tn__http_is_digit((unsigned char)buf[k])) return 0;
        m->status = m->status * 10 + (buf[k] - '0');
    }
    if (m->status < 100 || m->status > 599) return 0;
    m->version_minor = buf[7] == '1';
    m->reason = p;
    while (p < end && (unsigned char)*p >= 0x20 && *p != 0x7f) p++;
    if (end - p < 2 || p[0] != '\r' || p[1] != '\n') return 0;
    m->reason_len = (size_t)(p - m->reason);
    return tn__http_fields_fast(buf, p + 2, end, m, max);
}

int tn_http_parse_request(const char *buf, size_t len, size_t prev_len,
                          tn_http_message *msg, tn_http_header *headers,
                          size_t max_headers, const tn_http_limits *limits) {
    tn_http_limits lim = tn__http_limits_or_defaults(limits);
    tn__http_facts f;
    const char *p, *end, *auth = NULL;
    size_t auth_len = 0;
    size_t max = tn__http_field_room(headers, max_headers, &lim);
    int n, rc;
    tn__http_message_init(msg, headers);
    /* The one walk only on a first look: once a head came in pieces, the
     * strict scan goes on from prev_len, so a slow head stays O(n). */
    if (!TN__MINIMAL && !prev_len && (n = tn__http_request_fast(buf, len, msg, max, &lim)) > 0) {
        rc = tn__http_check_target(msg, &auth, &auth_len);
    } else {
        tn__http_message_init(msg, headers); /* what the one walk stored goes */
        if ((n = tn__http_find_head(buf, len, prev_len, &lim, 1)) < 0) return n;
        end = buf + n;
        p = tn__http_skip_empty_lines(buf, end);
        rc = tn__http_parse_request_line(&p, end, msg, lim.max_target);
        if (!rc) rc = tn__http_check_target(msg, &auth, &auth_len);
        if (!rc) rc = tn__http_parse_fields(p, end, headers, max, &msg->num_headers);
    }
    if (!rc) rc = tn__http_collect(msg, &f);
    if (!rc) rc = tn__http_request_framing(msg, &f, auth, auth_len);
    return rc ? rc : n;
}

int tn_http_parse_response(const char *buf, size_t len, size_t prev_len,
                           tn_http_message *msg, tn_http_header *headers,
                           size_t max_headers, const tn_http_limits *limits,
                           const char *request_method) {
    tn_http_limits lim = tn__http_limits_or_defaults(limits);
    tn__http_facts f;
    const char *p, *end;
    size_t max = tn__http_field_room(headers, max_headers, &lim);
    int n, rc;
    tn__http_message_init(msg, headers);
    /* the one walk only on a first look, as for requests */
    if (!TN__MINIMAL && !prev_len && (n = tn__http_response_fast(buf, len, msg, max, &lim)) > 0) {
        rc = 0;
    } else {
        tn__http_message_init(msg, headers);
        if ((n = tn__http_find_head(buf, len, prev_len, &lim, 0)) < 0) return n;
        end = buf + n;
        p = tn__http_skip_empty_lines(buf, end);
        rc = tn__http_parse_status_line(&p, end, msg);
        if (!rc) rc = tn__http_parse_fields(p, end, headers, max, &msg->num_headers);
    }
    if (!rc) rc = tn__http_collect(msg, &f);
    if (rc) return rc;
    tn__http_response_framing(msg, &f, request_method);
    return n;
}

/* ---- Chunked transfer coding (RFC 9112 section 7.1) ---- */

enum {
    TN__HTTP_CH_SIZE = 0,  /* first hex digit of a chunk size */
    TN__HTTP_CH_SIZE_MORE, /* further hex digits */
    TN__HTTP_CH_EXT_WS,    /* BWS after the size, before ";" or CR */
    TN__HTTP_CH_EXT,       /* chunk-ext, up to CR */
    TN__HTTP_CH_SIZE_LF,   /* LF ending the size line */
    TN__HTTP_CH_DATA,      /* chunk data; dec->size bytes left */
    TN__HTTP_CH_DATA_CR,   /* CRLF after the data */
    TN__HTTP_CH_DATA_LF,
    TN__HTTP_CH_TRAILERS,  /* trailer section, parsed once complete */
    TN__HTTP_CH_DONE
};

/* chunk-ext is "*( BWS ; BWS ext-name [ BWS = BWS ext-val ] )": we check
 * only that it is text and bounded; nobody should act on extensions. */
static int tn__http_chunk_ext_byte(tn_http_chunked *d, unsigned char c) {
    if (c == '\r') {
        d->state = TN__HTTP_CH_SIZE_LF;
        return 0;
    }
    if (d->state == TN__HTTP_CH_EXT_WS) {
        if (c == ';') d->state = TN__HTTP_CH_EXT;
        else if (!tn__http_is_ows(c)) return TN_EMALFORMED;
    } else if (!tn__http_is_text(c)) {
        return TN_EMALFORMED;
    }
    return ++d->ext_len > TN_HTTP_MAX_CHUNK_EXT ? TN_EMALFORMED : 0;
}

/* The size line is complete: start the data, or the trailer section. */
static int tn__http_chunk_start(tn_http_chunked *d, uint64_t max_body) {
    if (d->size == 0) {
        d->state = TN__HTTP_CH_TRAILERS;
        d->trailer_seen = 0;
        return 0;
    }
    /* Refuse before the data arrives: the size announces it. */
    if (max_body && d->size > max_body - d->body_len) return TN_ETOOLARGE;
    d->body_len = d->size > UINT64_MAX - d->body_len ? UINT64_MAX
                                                      : d->body_len + d->size;
    d->state = TN__HTTP_CH_DATA;
    return 0;
}

/* One byte of framing (everything but data and trailers). */
static int tn__http_chunk_byte(tn_http_chunked *d, unsigned char c,
                               uint64_t max_body) {
    int v = tn__http_hex_value(c);
    switch (d->state) {
    case TN__HTTP_CH_SIZE:
        if (v < 0) return TN_EMALFORMED; /* chunk-size = 1*HEXDIG */
        d->size = (uint64_t)v;
        d->digits = 1;
        d->state = TN__HTTP_CH_SIZE_MORE;
        return 0;
    case TN__HTTP_CH_SIZE_MORE:
        if (v >= 0) {
            /* Sizes are kept below 2^63 so they fit an int64_t length. */
            if (++d->digits > 16 || d->size > ((uint64_t)INT64_MAX >> 4))
                return TN_EMALFORMED;
            d->size = d->size * 16 + (uint64_t)v;
            return 0;
        }
        d->ext_len = 0;
        d->state = TN__HTTP_CH_EXT_WS;
        return tn__http_chunk_ext_byte(d, c);
    case TN__HTTP_CH_EXT_WS:
    case TN__HTTP_CH_EXT:
        return tn__http_chunk_ext_byte(d, c);
    case TN__HTTP_CH_SIZE_LF:
        return c == '\n' ? tn__http_chunk_start(d, max_body) : TN_EMALFORMED;
    case TN__HTTP_CH_DATA_CR:
        d->state = TN__HTTP_CH_DATA_LF;
        return c == '\r' ? 0 : TN_EMALFORMED;
    case TN__HTTP_CH_DATA_LF:
        d->state = TN__HTTP_CH_SIZE;
        return c == '\n' ? 0 : TN_EMALFORMED;
    default:
        return TN_ESTATE; /* data, trailers and done are handled elsewhere */
    }
}

/* The trailer section starts at buf[0]: the same block as a head's fields
 * minus the start line, checked by the same scan and field-line parser.
 * Returns its length once complete, or TN_EAGAIN (nothing consumed). */
static int tn__http_chunk_trailers(tn_http_chunked *d, const char *buf,
                                   size_t len, const tn_http_limits *limits) {
    tn_http_limits lim = tn__http_limits_or_defaults(limits);
    tn__http_scan_opts o;
    size_t max = lim.max_headers;
    int n, rc;
    o.max_bytes = lim.max_head;
    o.max_target = 0;
    o.start_line = 0;
    n = tn__http_scan(buf, len, d->trailer_seen <= len ? d->trailer_seen : 0, &o);
    if (n == TN_EAGAIN) d->trailer_seen = len;
    if (n < 0) return n;
    if (d->trailers && d->max_trailers < max) max = d->max_trailers;
    rc = tn__http_parse_fields(buf, buf + n, d->trailers, max, &d->num_trailers);
    if (rc) return rc;
    d->state = TN__HTTP_CH_DONE;
    d->done = 1;
    return n;
}

int tn_http_chunked_decode(tn_http_chunked *dec, char *buf, size_t len,
                           size_t *out_len, uint64_t max_body,
                           const tn_http_limits *limits) {
    size_t i = 0, o = 0;
    int rc = 0;
    *out_len = 0;
    if (dec->err) return dec->err;
    if (len > TN__HTTP_INT_MAX) len = TN__HTTP_INT_MAX;
    while (i < len && dec->state != TN__HTTP_CH_DONE) {
        if (dec->state == TN__HTTP_CH_DATA) {
            size_t n = len - i;
            if ((uint64_t)n > dec->size) n = (size_t)dec->size;
            memmove(buf + o, buf + i, n);
            o += n;
            i += n;
            dec->size -= n;
            if (dec->size == 0) dec->state = TN__HTTP_CH_DATA_CR;
        } else if (dec->state == TN__HTTP_CH_TRAILERS) {
            rc = tn__http_chunk_trailers(dec, buf + i, len - i, limits);
            if (rc == TN_EAGAIN) { /* keep them: the caller passes them again */
                rc = 0;
                break;
            }
            if (rc < 0) break;
            i += (size_t)rc;
            rc = 0;
        } else {
            rc = tn__http_chunk_byte(dec, (unsigned char)buf[i++], max_body);
            if (rc) break;
        }
    }
    if (rc < 0) {
        dec->err = rc;
        return rc;
    }
    *out_len = o;
    return (int)i;
}

/* ---- Helpers ---- */

int tn_http_header_eq(const tn_http_header *h, const char *name) {
    return tn__http_ieq(h->name, h->name_len, name);
}

const tn_http_header *tn_http_find_header(const tn_http_message *m,
                                          const char *name) {
    size_t i, n = strlen(name);
    /* The length first, once: most names differ in it (a lookup of an
     * absent field, the usual case, then costs a compare per field). */
    for (i = 0; i < m->num_headers; i++)
        if (m->headers[i].name_len == n && tn__http_ieq_n(m->headers[i].name, name, n)) return &m->headers[i];
    return NULL;
}

int tn_http_error_status(int err) {
    switch (err) {
    case TN_EMALFORMED: return 400;
    case TN_ETOOLARGE: return 413;
    case TN_EURILONG: return 414;
    case TN_EHEADERS: return 431;
    case TN_ENOTIMPL: return 501;
    case TN_EVERSION: return 505;
    default: return 500;
    }
}


#if !defined(TN_NO_HTTP_SERVER) || !defined(TN_NO_HTTP_CLIENT)
/* ------------------------------------------------------------ body reader
 * How a message's body is delimited, and reading it as it arrives: one
 * mechanism for request bodies (the server) and response bodies (the
 * client). The owner keeps the raw bytes; tn__body_feed takes the next of
 * them and says how many it consumed and which decoded bytes they gave. */
#define TN__B_NONE 0    /* no body */
#define TN__B_LENGTH 1  /* Content-Length */
#define TN__B_CHUNKED 2 /* the chunked coding */
#define TN__B_CLOSE 3   /* until the connection closes (responses) */

typedef struct tn__body {
    int kind;
    uint64_t left; /* TN__B_LENGTH: bytes still to come */
    uint64_t got;  /* decoded bytes so far */
    uint64_t max;  /* decoded bytes allowed (0: any) -> TN_ETOOLARGE */
    tn_http_chunked ch;
} tn__body;

/* Sets b up for the message m parsed (a request or a response). */
static void tn__body_start(tn__body *b, const tn_http_message *m, uint64_t max) {
    b->kind = 0;
    b->left = b->got = 0;
    b->max = max;
    if (m->chunked) {
        b->kind = TN__B_CHUNKED;
        memset(&b->ch, 0, sizeof b->ch); /* the decoder's state: only a chunked body has one */
    } else if (m->close_delimited) {
        b->kind = TN__B_CLOSE;
    } else if (m->content_length > 0) {
        b->kind = TN__B_LENGTH;
        b->left = (uint64_t)m->content_length;
    }
}

/* Feeds raw[0..n), the bytes after those consumed so far (with eof: no more
 * will come). *data, *len receive the body bytes decoded from them (within
 * raw: the chunked coding is decoded in place, moved down over its
 * framing); *done is set once the body is complete (bytes after it are not
 * consumed: they are the next message's). Returns the raw bytes consumed,
 * or TN_ETOOLARGE, TN_ECLOSED (cut off by eof), or a chunked-coding error
 * (TN_EMALFORMED, TN_EHEADERS). */
static int tn__body_feed(tn__body *b, char *raw, size_t n, int eof, const tn_http_limits *lim, char **data,
                         size_t *len, int *done) {
    int rc = 0;
    *data = raw;
    *len = 0;
    *done = 0;
    if (n > TN__HTTP_INT_MAX) n = TN__HTTP_INT_MAX;
    switch (b->kind) {
    case TN__B_LENGTH:
        *len = (uint64_t)n < b->left ? n : (size_t)b->left;
        b->left -= *len;
        rc = (int)*len;
        *done = b->left == 0;
        break;
    case TN__B_CHUNKED:
#if TN__CHUNKED_IN
        rc = tn_http_chunked_decode(&b->ch, raw, n, len, b->max, lim);
        if (rc < 0) return rc;
        *done = b->ch.done;
        break;
#else
        (void)lim;
        return TN_EMALFORMED; /* not reached: the server answered the request 501 */
#endif
    case TN__B_CLOSE:
        *len = n;
        rc = (int)n;
        *done = eof;
        break;
    default:
        *done = 1;
        return 0;
    }
    b->got += *len;
    if (b->max && b->got > b->max) return TN_ETOOLARGE;
    if (!*done && eof) return TN_ECLOSED; /* nothing more comes: retained trailer bytes included */
    return rc;
}

#endif /* the body reader */

#ifndef TN_NO_HTTP_SERVER
/* ============================================================ HTTP server
 * Routes, requests, responses, connections; the connection is an owner of
 * a stream (see STREAMS) and reads request bodies with the body reader. */
typedef struct tn__route {
    char *method; /* NULL: any */
    char *pattern;
    size_t method_len, pattern_len; /* strlen of each, for the per-request match */
    tn_http_handler_fn fn;
    tn_co_fn co_fn;
    void *arg;
    tn_free_fn arg_free; /* the library's own routes (tn_http_static) */
    tn_http_route_opts opts;
} tn__route;

typedef struct tn__conn tn__conn;

/* A list of connections in deadline order (see tn_http_server.lists). */
typedef struct tn__tlist {
    tn__conn *head, *tail;
    tn_timer timer;
    unsigned ms;
    int armed;
} tn__tlist;

/* Request states */
#define TN__RQ_HEAD 0    /* reading the head */
#define TN__RQ_BODY 1    /* reading a body */
#define TN__RQ_HANDLER 2 /* the handler has it */

/* The NUL after a buffered body (tn_http_body): the byte it covers is put
 * back when the request ends (TN__NUL_SAVED), or it was one byte more
 * (TN__NUL_EXTRA), consumed with the request. */
#define TN__NUL_NONE 0
#define TN__NUL_SAVED 1
#define TN__NUL_EXTRA 2

struct tn_http_request {
    tn__conn *conn;
    tn_http_server *srv;
    tn_http_request *next_free;
    const tn__route *route;
    size_t prev_len; /* parser resumption point */
    size_t head_len; /* the head's bytes, from the input's off */
    size_t body_len; /* body bytes gathered (decoded) */
    size_t body_raw; /* raw bytes after the head that belong to this request */
    size_t path_end;  /* target bytes before its '?' (target_len: no query) */
    int target_pct;   /* the target has a '%' */
    tn__body body;
    int state;
    /* decoded strings live in scratch (sized once, never moved) */
    char *scratch;
    size_t scratch_len, scratch_cap;
    const char *path;
    size_t nparams;
    /* the web layer's, in the arena (see "request arena") */
    struct tn__arena *arena;
    struct tn__kv *qargs, *bargs, *cookies;
    size_t nq, nb, ncookies, nfiles;
    tn_http_file *files;
    int args_state, status_set;
    unsigned char cookies_parsed, in_error_hook, has_etag; /* flags: chars keep the part tn__req_get zeroes small */
    const char *cache_key; /* a cached route's key (in the arena) while its answer is made */
    uint64_t etag;
    uint64_t start_ns;
    /* response */
    char *rh; /* header lines set by the handler, "Name: value\r\n"... */
    size_t rh_len, rh_cap;
    int status;
    unsigned char headers_sent, finished, chunked_out, no_body, closed, is_head, has_ctype;
    unsigned char no_ctype;     /* tn_http_clear_header("Content-Type"): not even the default */
    unsigned char write_failed; /* the last body write failed: the body has a hole unless a write retries it */
    int nul_state;
    char nul_saved;
    int64_t length_out;
    uint64_t out_len;     /* response body bytes written */
    uint64_t body_mark;   /* the stream's copy count after the head: this body's copies start there */
    uint64_t since_yield; /* body bytes offered since the handler last gave the loop a turn */
    const char *base;     /* the input's data + off when the head was parsed */
    tn_co *frame;
    tn_future *co_future;
    tn_future *drain;
    /* Not cleared between requests (tn__req_get clears what is above):
     * the parser sets msg whole before anything reads it (a request object
     * is parsed as soon as it is taken), and only the first nparams / the
     * parsed headers are ever read. */
    tn_http_message msg;
    struct {
        const char *name, *raw, *value; /* value: decoded, NUL-terminated */
        size_t name_len, raw_len;
    } params[TN_HTTP_MAX_PARAMS];
    tn_http_header headers[TN_HTTP_MAX_HEADERS];
};

#define TN__C_CLOSE_AFTER 1u /* close once the output is written */
#define TN__C_IN_BATCH 2u    /* inside on_read: flush at the end */
#define TN__C_SHED 4u        /* over max_connections: answered 503 */
#define TN__C_ZOMBIE 8u      /* fd closed, a handler still holds the request */
#define TN__C_CLOSE_NOW 16u  /* close asked for inside a batch: done after it */
#define TN__C_SERVED 32u     /* has served a request: idle timeout applies */
#define TN__C_HELD 64u       /* the batch stopped for output backpressure */
#define TN__C_GOT_BYTES 128u /* the current request has sent at least one byte */
#define TN__C_LIST_SHIFT 8   /* bits 8-10: which deadline list + 1; 0: none */
#define TN__C_LIST(c) (((c)->s.oflags >> TN__C_LIST_SHIFT) & 7u)
#define TN__C_CUT 2048u      /* an error answer cut a request short: linger before closing */
#define TN__C_LINGER 4096u   /* lingering: our FIN is sent, the client's bytes are dropped */

/* Every idle keep-alive connection costs this struct (96 bytes on LP64)
 * and its fd-table entry, so fields earn their place: flags live in the
 * stream's spare half-word, buffers and the write-stall clock in the
 * stream's I/O state (only while active), the read deadlines in shared
 * lists. */
struct tn__conn {
    tn_stream s; /* first: stream callbacks cast back to the connection */
    tn_http_server *srv;
    tn__conn *prev, *next;
    tn_http_request *req;
    tn__conn *lprev, *lnext; /* on a deadline list (header, body, idle or linger) */
    uint64_t luntil;         /* its deadline there */
    size_t charged;          /* its input buffer beyond TN_BUF_SIZE: counted in srv->buffered */
};

#define TN__MAX_LISTEN 8

/* How most answers begin; tn__put_status() appends the Date. */
#define TN__HEAD200 "HTTP/1.1 200 OK\r\nServer: tornado.h\r\n"

struct tn_http_server {
    tn_loop *loop;
    tn_http_server_opts opts;
    tn_http_limits limits;
    tn__acceptor lst[TN__MAX_LISTEN];
    tn_tls_ctx *lst_tls[TN__MAX_LISTEN]; /* a TLS listener's context, or NULL */
    int nlisten, port;
    tn__route *routes;
    size_t nroutes, routes_cap;
    tn__conn *conns;
    size_t nconns, nshed;
    size_t buffered; /* input buffer bytes beyond TN_BUF_SIZE, all connections: max_buffered_bytes */
    tn_http_request *req_free;
    size_t nreq_free;
    /* TN__HEAD200 then "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n" (date_len
     * bytes, 0 before the first answer), rebuilt at most once a second:
     * the head of a 1.1 200 starts with one copy of it. */
    char head200[sizeof TN__HEAD200 - 1 + 37];
    size_t date_len;
    uint64_t date_at_ns;
    /* The header, body, idle and linger timeouts (TN__L_*): see "conn timers". */
    tn__tlist lists[4];
    int shutting_down, free_pending;
    tn_future *shutdown_f;
    tn_timer shutdown_timer;
};

static void tn__req_settle_drain(tn_http_request *r, int err);
static void tn__conn_process(tn__conn *c);
static void tn__conn_close(tn__conn *c);
static void tn__conn_linger(tn__conn *c);
static void tn__conn_end_request(tn__conn *c);
static void tn__conn_run(tn__conn *c);

const char *tn_http_reason(int status) {
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 418: return "I'm a teapot";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

/* "Sun, 06 Nov 1994 08:49:37 GMT" (IMF-fixdate, RFC 9110 5.6.7): 29 bytes
 * into buf, no NUL. */
static size_t tn__fmt_http_date(char *buf, time_t t) {
    static const char days[] = "SunMonTueWedThuFriSat";
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    struct tm tm;
    char *p = buf;
    int y;
    gmtime_r(&t, &tm);
    y = tm.tm_year + 1900;
    if (y < 0) y = 0;
    if (y > 9999) y = 9999;
#define TN__2D(v) (*p++ = (char)('0' + (v) / 10 % 10), *p++ = (char)('0' + (v) % 10))
    memcpy(p, days + 3 * tm.tm_wday, 3);
    p += 3;
    *p++ = ',';
    *p++ = ' ';
    TN__2D(tm.tm_mday);
    *p++ = ' ';
    memcpy(p, months + 3 * tm.tm_mon, 3);
    p += 3;
    *p++ = ' ';
    TN__2D(y / 100);
    TN__2D(y % 100);
    *p++ = ' ';
    TN__2D(tm.tm_hour);
    *p++ = ':';
    TN__2D(tm.tm_min);
    *p++ = ':';
    TN__2D(tm.tm_sec);
#undef TN__2D
    memcpy(p, " GMT", 4);
    return 29;
}

/* The Date header, formatted at most once per second. */
static void tn__http_date(tn_http_server *srv) {
    uint64_t now = srv->loop->now_ns;
    char *d = srv->head200 + sizeof TN__HEAD200 - 1;
    if (srv->date_len && now - srv->date_at_ns < 1000000000u) return;
    srv->date_at_ns = now;
    memcpy(srv->head200, TN__HEAD200, sizeof TN__HEAD200 - 1);
    memcpy(d, "Date: ", 6);
    tn__fmt_http_date(d + 6, time(NULL));
    memcpy(d + 35, "\r\n", 2);
    srv->date_len = 37;
}

/* The status line, Server and Date (tn__http_date() called first): at most
 * TN__STATUS_ROOM + strlen(reason) bytes. A 1.1 200 is one copy. */
#define TN__STATUS_ROOM (sizeof "HTTP/1.1 999 \r\nServer: tornado.h\r\n" + 37)
static char *tn__put_status(char *p, const tn_http_server *srv, int minor, int status, const char *reason) {
    if (status == 200 && minor) return tn__put(p, srv->head200, sizeof TN__HEAD200 - 1 + srv->date_len);
    p = tn__put(p, minor ? "HTTP/1.1 " : "HTTP/1.0 ", 9);
    p = tn__put_u64(p, (uint64_t)status, 0);
    *p++ = ' ';
    p = tn__put(p, reason, strlen(reason));
    p = tn__put(p, "\r\nServer: tornado.h\r\n", 21);
    return tn__put(p, srv->head200 + sizeof TN__HEAD200 - 1, srv->date_len);
}

/* ------------------------------------------------------- conn timers
 * The read deadlines (a head, a body, an idle wait, a linger) each have one
 * length, so a list kept in append order is sorted by deadline and one
 * timer per list serves every connection. The write-stall clock is the
 * stream's (it runs only while output is stuck). */
static int tn__conn_error(tn__conn *c, int status);

#define TN__L_HEADER 0
#define TN__L_BODY 1
#define TN__L_IDLE 2
#define TN__L_LINGER 3

static void tn__list_del(tn__conn *c) {
    tn__tlist *L;
    if (!TN__C_LIST(c)) return;
    L = &c->srv->lists[TN__C_LIST(c) - 1];
    if (c->lprev) c->lprev->lnext = c->lnext;
    else L->head = c->lnext;
    if (c->lnext) c->lnext->lprev = c->lprev;
    else L->tail = c->lprev;
    c->lprev = c->lnext = NULL;
    c->s.oflags &= (uint16_t)~(7u << TN__C_LIST_SHIFT);
}

static void tn__list_fire(tn_loop *l, void *arg);

static void tn__list_arm(tn_http_server *srv, tn__tlist *L) {
    if (L->armed || !L->head) return;
    L->armed = tn__timer_start(srv->loop, L->head->luntil, 0, tn__list_fire, L, &L->timer) == 0;
}

/* Puts c at the tail of list k with a fresh deadline (moving it if it
 * was on a list). */
static void tn__list_add(tn__conn *c, int k) {
    tn_http_server *srv = c->srv;
    tn__tlist *L = &srv->lists[k];
    tn__list_del(c);
    c->luntil = srv->loop->now_ns + (uint64_t)L->ms * 1000000u;
    c->s.oflags |= (uint16_t)((unsigned)(k + 1) << TN__C_LIST_SHIFT);
    c->lprev = L->tail;
    if (L->tail) L->tail->lnext = c;
    else L->head = c;
    L->tail = c;
    tn__list_arm(srv, L);
}

/* A read deadline passed. Idle (no byte of a request yet): just close.
 * Mid-request: 408. */
static void tn__conn_expire(tn__conn *c) {
    if (c->s.oflags & TN__C_LINGER) {
        tn__conn_close(c);
        return;
    }
    if (!(c->s.oflags & TN__C_GOT_BYTES) || (c->req && c->req->state == TN__RQ_HANDLER)) {
        if (!c->req || c->req->state != TN__RQ_HANDLER) tn__conn_close(c);
        return;
    }
    tn__conn_error(c, 408);
}

static void tn__list_fire(tn_loop *l, void *arg) {
    tn__tlist *L = (tn__tlist *)arg;
    L->armed = 0;
    while (L->head && L->head->luntil <= l->now_ns) {
        tn__conn *c = L->head;
        tn__list_del(c);
        tn__conn_expire(c);
    }
    if (L->head) tn__list_arm(L->head->srv, L); /* the head may have left early */
}

/* ------------------------------------------------------ input memory
 * Input beyond a connection's first TN_BUF_SIZE (a long head, a buffered
 * body) comes out of one server-wide budget, max_buffered_bytes: without
 * it 500 uploads of a 1 MiB - 1 body held 500 MiB. A connection's charge
 * follows its buffer's capacity. */
static size_t tn__charge_of(size_t cap) { return cap > TN_BUF_SIZE ? cap - TN_BUF_SIZE : 0; }

static void tn__conn_account(tn__conn *c) {
    size_t now = tn__charge_of(c->s.io && c->s.io->in.data ? c->s.io->in.cap : 0);
    c->srv->buffered = c->srv->buffered - c->charged + now;
    c->charged = now;
}

/* Whether the input may grow to a capacity of cap. */
static int tn__conn_budget_allows(const tn__conn *c, size_t cap) {
    const tn_http_server *srv = c->srv;
    return srv->buffered - c->charged + tn__charge_of(cap) <= srv->opts.max_buffered_bytes;
}

static void tn__conn_in_release(tn__conn *c) {
    tn__stream_in_release(&c->s);
    tn__conn_account(c);
}

/* The stream asks how big the input may get now: a whole head (and one
 * byte, so an over-long head is seen as such), the framing around a chunked
 * body, within the budget; never moved while a handler holds the request. */
static size_t tn__conn_in_limit(tn_stream *s) {
    tn__conn *c = (tn__conn *)s;
    tn_http_server *srv = c->srv;
    tn_http_request *r = c->req;
    size_t want = srv->opts.max_head_bytes + 1, budget;
    if (c->s.oflags & TN__C_LINGER) return TN_BUF_SIZE;
    if (r && r->state == TN__RQ_HANDLER) return 0;
    if (r && r->state == TN__RQ_BODY) {
        /* Content-Length bodies were given their room at the head; a
         * chunked one grows with what it decodes, plus its framing: a
         * trailer section (a head's worth) or a size line. */
        want = r->head_len + (r->route->opts.on_body ? 0 : (size_t)r->body.max) + srv->opts.max_head_bytes +
               TN_HTTP_MAX_CHUNK_EXT + 64;
        if (s->io && want < s->io->in.cap) want = s->io->in.cap;
    }
    if (s->io) want += s->io->in.off; /* consumed bytes slide away first */
    budget = srv->opts.max_buffered_bytes - (srv->buffered - c->charged) + TN_BUF_SIZE;
    return want < budget ? want : budget;
}

/* --------------------------------------------------- request objects */
static tn_http_request *tn__req_get(tn_http_server *srv) {
    tn_http_request *r = srv->req_free;
    char *scratch = NULL, *rh = NULL;
    size_t scap = 0, rcap = 0;
    if (r) {
        srv->req_free = r->next_free;
        srv->nreq_free--;
        scratch = r->scratch;
        scap = r->scratch_cap;
        rh = r->rh;
        rcap = r->rh_cap;
    } else if (!(r = (tn_http_request *)tn__malloc(srv->loop, sizeof *r))) {
        return NULL;
    }
    /* Reset all but msg (the parser sets it whole) and the params and
     * header arrays, which routing and the parser fill as needed. */
    memset(r, 0, offsetof(tn_http_request, msg));
    r->scratch = scratch;
    r->scratch_cap = scap;
    r->rh = rh;
    r->rh_cap = rcap;
    r->srv = srv;
    r->length_out = -1;
    r->start_ns = srv->loop->now_ns;
    return r;
}

static void tn__req_arena_free(tn_http_request *r);

static void tn__req_put(tn_http_server *srv, tn_http_request *r) {
    if (r->frame && !r->co_future) tn__free(r->frame); /* made, never started */
    r->frame = NULL;
    tn__req_arena_free(r);
    /* "n + 1 >": with TN_HTTP_REQ_POOL 0, "n >= 0" is a -Wtype-limits error */
    if (srv->nreq_free + 1 > TN_HTTP_REQ_POOL || r->scratch_cap > 65536 || r->rh_cap > 65536) {
        tn__free(r->scratch);
        tn__free(r->rh);
        tn__free(r);
        return;
    }
    r->next_free = srv->req_free;
    srv->req_free = r;
    srv->nreq_free++;
}

/* -------------------------------------------------------- response out */

/* The header lines a handler set: each "Name: value\r\n". The offset of
 * the first named name (and *line_end, where it ends), or -1. */
static int tn__rh_find(const tn_http_request *r, const char *name, size_t nl, size_t *line_end) {
    size_t i = 0;
    while (i < r->rh_len) {
        const char *line = r->rh + i;
        size_t ll = (size_t)((const char *)memchr(line, '\n', r->rh_len - i) - line) + 1;
        if (ll > nl && line[nl] == ':' && tn__http_ieq(line, nl, name)) {
            *line_end = i + ll;
            return (int)i;
        }
        i += ll;
    }
    return -1;
}

/* Removes every line named name; returns how many. */
static int tn__rh_remove(tn_http_request *r, const char *name, size_t nl) {
    size_t end;
    int at, n = 0;
    while ((at = tn__rh_find(r, name, nl, &end)) >= 0) {
        memmove(r->rh + at, r->rh + end, r->rh_len - end);
        r->rh_len -= end - (size_t)at;
        n++;
    }
    return n;
}

#define TN__DEFAULT_CTYPE "text/plain; charset=utf-8"
/* Reserves the head's room (and body_room more, so a body copy that
 * follows cannot fail halfway) and writes the status line and headers.
 * length: the body's, or -1. */
static int tn__send_head(tn_http_request *r, int status, const char *ctype, int64_t length, size_t body_room) {
    tn__conn *c = r->conn;
    tn_http_server *srv = r->srv;
    /* The client half-closed and nothing follows this request: the last answer. */
    int eof_last = (c->s.flags & TN__S_EOF) && c->s.io &&
                   c->s.io->in.len - c->s.io->in.off <= r->head_len + r->body_raw + 1;
    int keep = r->msg.keep_alive && !srv->shutting_down && !(c->s.oflags & TN__C_CLOSE_AFTER) && !eof_last;
    int bodyless = status == 204 || status == 304;
    const char *reason;
    size_t clen;
    char *p;
    if (r->headers_sent) return TN_ESTATE;
    /* Final responses only: a 1xx is interim (the server sends the 100
     * itself), and RFC 9110 defines nothing above 599. */
    if (status < 200 || status > 599) return TN_EINVAL;
    if (c->s.flags & TN__S_CLOSED) {
        r->headers_sent = 1;
        r->closed = 1;
        return TN_ECLOSED;
    }
    if (ctype && r->has_ctype) { /* the argument is the later word */
        tn__rh_remove(r, "content-type", 12);
        r->has_ctype = 0;
    }
    if (ctype) clen = strlen(ctype);
    else if (!r->has_ctype && !r->no_ctype && !bodyless) {
        ctype = TN__DEFAULT_CTYPE;
        clen = sizeof TN__DEFAULT_CTYPE - 1;
    } else
        clen = 0;
    tn__http_date(srv);
    /* One reservation for the longest head these pieces can make, then
     * plain copies: a head is a dozen pieces, each an append call before. */
    reason = status == 200 ? "OK" : tn_http_reason(status);
    if (!(p = tn__stream_room(&c->s, TN__STATUS_ROOM + (status == 200 ? 2 : strlen(reason)) +
                                         sizeof "Content-Type: \r\n" + clen + r->rh_len +
                                         sizeof "ETag: \"0123456789abcdef\"\r\n" +
                                         sizeof "Content-Length: 18446744073709551615\r\n" +
                                         sizeof "Connection: keep-alive\r\n\r\n" + body_room)))
        return TN_ENOMEM;
    r->headers_sent = 1;
    r->status = status;
    r->no_body = r->is_head || bodyless;
    if (length < 0 && !r->no_body) {
        if (r->msg.version_minor >= 1) r->chunked_out = 1;
        else keep = 0; /* HTTP/1.0: the close delimits the body */
    }
    r->length_out = length;
    if (!keep) c->s.oflags |= TN__C_CLOSE_AFTER;
    {
        char *start = p;
        p = tn__put_status(p, srv, r->msg.version_minor >= 1, status, reason);
        if (ctype) {
            p = tn__put(p, "Content-Type: ", 14);
            p = tn__put(p, ctype, clen);
            p = tn__put(p, "\r\n", 2);
        }
        if (r->rh_len) p = tn__put(p, r->rh, r->rh_len);
        if (r->has_etag) {
            p = tn__put(p, "ETag: \"", 7);
            p = tn__put_hex16(p, r->etag);
            p = tn__put(p, "\"\r\n", 3);
        }
        if (!bodyless) {
            if (length >= 0) {
                p = tn__put(p, "Content-Length: ", 16);
                p = tn__put_u64(p, (uint64_t)length, 0);
                p = tn__put(p, "\r\n", 2);
            } else if (r->msg.version_minor >= 1) {
                p = tn__put(p, "Transfer-Encoding: chunked\r\n", 28);
            }
        }
        if (!keep) p = tn__put(p, "Connection: close\r\n", 19);
        else if (r->msg.version_minor == 0) p = tn__put(p, "Connection: keep-alive\r\n", 24);
        p = tn__put(p, "\r\n", 2);
        tn__stream_commit(&c->s, (size_t)(p - start));
    }
    r->body_mark = c->s.io->cq;
    return 0;
}

/* A header name and value a handler may send: a token, and no CR, LF, NUL
 * or other control byte (a header cannot be injected). */
static int tn__header_ok(const char *name, size_t *nl, const char *value, size_t *vl) {
    size_t i;
    if (!name || !value) return 0;
    *nl = strlen(name);
    *vl = strlen(value);
    if (!*nl) return 0;
    for (i = 0; i < *nl; i++)
        if (!tn__http_is_tchar((unsigned char)name[i])) return 0;
    for (i = 0; i < *vl; i++) {
        unsigned char ch = (unsigned char)value[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f) return 0;
    }
    return 1;
}

static int tn__rh_append(tn_http_request *r, const char *name, size_t nl, const char *value, size_t vl) {
    if (tn__grow(r->srv->loop, (void **)&r->rh, &r->rh_cap, r->rh_len + nl + vl + 4, 1)) return TN_ENOMEM;
    memcpy(r->rh + r->rh_len, name, nl);
    r->rh_len += nl;
    r->rh[r->rh_len++] = ':';
    r->rh[r->rh_len++] = ' ';
    memcpy(r->rh + r->rh_len, value, vl);
    r->rh_len += vl;
    r->rh[r->rh_len++] = '\r';
    r->rh[r->rh_len++] = '\n';
    return 0;
}

/* set (replace) or add one header line. */
static int tn__set_header(tn_http_request *r, const char *name, const char *value, int replace) {
    size_t nl, vl;
    int rc, ctype;
    if (r->headers_sent) return TN_ESTATE;
    if (!tn__header_ok(name, &nl, value, &vl)) return TN_EINVAL;
    /* The server frames every response itself: a handler's own framing
     * fields could contradict it (two lengths, a length and chunked). */
    if (tn__http_ieq(name, nl, "content-length") || tn__http_ieq(name, nl, "transfer-encoding"))
        return TN_EINVAL;
    if (tn__http_ieq(name, nl, "connection")) {
        if (!tn__http_ieq(value, vl, "close")) return TN_EINVAL;
        r->conn->s.oflags |= TN__C_CLOSE_AFTER; /* the head then says "Connection: close" */
        return 0;
    }
    ctype = tn__http_ieq(name, nl, "content-type");
    if (replace || ctype) tn__rh_remove(r, name, nl); /* one Content-Type, whatever the call */
    rc = tn__rh_append(r, name, nl, value, vl);
    if (rc == 0 && ctype) r->has_ctype = 1;
    return rc;
}

int tn_http_set_header(tn_http_request *r, const char *name, const char *value) {
    return tn__set_header(r, name, value, 1);
}
int tn_http_add_header(tn_http_request *r, const char *name, const char *value) {
    return tn__set_header(r, name, value, 0);
}
int tn_http_clear_header(tn_http_request *r, const char *name) {
    size_t nl;
    if (r->headers_sent) return TN_ESTATE;
    if (!name || !(nl = strlen(name))) return TN_EINVAL;
    if (tn__http_ieq(name, nl, "content-type")) {
        r->has_ctype = 0;
        r->no_ctype = 1; /* nor the default: see tn__send_head */
        tn__rh_remove(r, name, nl);
        return 0;
    }
    return tn__rh_remove(r, name, nl) ? 0 : TN_ENOENT;
}

/* Every flush of a connection goes through here, so a handler waiting in
 * tn_http_drain hears as soon as the output is below the low watermark,
 * whoever flushed. Returns non-zero if the connection failed (and may be
 * gone). */
static int tn__conn_flush(tn__conn *c) {
    tn_http_request *r = c->req;
    if (c->s.flags & TN__S_CLOSED) return TN_ECLOSED;
    if (tn__stream_flush(&c->s)) return TN_ECLOSED;
    tn__stream_stall_watch(&c->s, c->srv->opts.write_timeout_ms);
    if (r && r->drain && tn__stream_pending(&c->s) < TN_HTTP_WRITE_LOW) tn__req_settle_drain(r, 0);
    return 0;
}

static void tn__conn_maybe_flush(tn__conn *c) {
    if (!(c->s.oflags & TN__C_IN_BATCH)) tn__conn_flush(c);
}

/* This response's body copies not yet taken by the kernel. */
static uint64_t tn__resp_unsent_copies(const tn_http_request *r) {
    const tn__sio *io = r->conn->s.io;
    if (!io) return 0;
    return io->cq - (io->cw > r->body_mark ? io->cw : r->body_mark);
}

int tn_http_begin(tn_http_request *r, int status, const char *ctype, int64_t length) {
    int rc;
    if (r->finished) return TN_ESTATE;
    rc = tn__send_head(r, status, ctype, length, 0);
    if (rc == 0) tn__conn_maybe_flush(r->conn);
    return r->closed ? TN_ECLOSED : rc;
}

/* The checks every body write makes; 1: nothing to write (a body-less
 * response drops it), 0: go on, else the error. */
static int tn__write_check(tn_http_request *r, uint64_t len, int copy) {
    tn__conn *c = r->conn;
    int rc;
    if (!r->headers_sent && (rc = tn__send_head(r, r->status_set ? r->status_set : 200, NULL, -1, 0)) != 0) return rc;
    if (r->finished) return TN_ESTATE;
    if (r->closed || (c->s.flags & TN__S_CLOSED)) return TN_ECLOSED;
    r->since_yield += len;
    if (r->no_body || len == 0) return 1;
    if (r->length_out >= 0 && r->out_len + len > (uint64_t)r->length_out) return TN_EINVAL;
    /* A plain handler sends nothing before it returns: without this cap,
     * GET /bytes/104857600 held 100 MiB per request. */
    if (copy && tn__resp_unsent_copies(r) + len > TN_HTTP_WRITE_HIGH) return TN_EFULL;
    return 0;
}

/* The chunk-size line of a len-byte chunk into buf (at least 20 bytes). */
static size_t tn__chunk_line(char *buf, uint64_t len) {
    char *p = tn__put_u64(buf, len, 1);
    return (size_t)(tn__put(p, "\r\n", 2) - buf);
}

int tn_http_write(tn_http_request *r, const char *data, size_t len) {
    tn__conn *c = r->conn;
    int rc = tn__write_check(r, len, 1);
    char line[24], *p;
    size_t ll = 0;
    if (rc == TN_EFULL) r->write_failed = 1; /* a hole, unless the handler retries */
    if (rc) return rc > 0 ? 0 : rc;
    if (r->chunked_out) ll = tn__chunk_line(line, len);
    /* One reservation: a chunk is all written or not at all. */
    if (!(p = tn__stream_room(&c->s, ll + len + (ll ? 2 : 0)))) {
        r->write_failed = 1;
        return TN_ENOMEM;
    }
    r->write_failed = 0;
    p = tn__put(p, line, ll);
    p = tn__put(p, data, len);
    if (ll) p = tn__put(p, "\r\n", 2);
    tn__stream_commit(&c->s, ll + len + (ll ? 2 : 0));
    r->out_len += len;
    if (tn__stream_pending(&c->s) >= TN_HTTP_WRITE_LOW) tn__conn_maybe_flush(c);
    return 0;
}

int tn_http_write_ref(tn_http_request *r, const char *data, size_t len, tn_free_fn free_fn, void *free_arg) {
    tn__conn *c = r->conn;
    int rc = tn__write_check(r, len, 0);
    char line[24];
    size_t ll = 0;
    if (rc) {
        if (free_fn) free_fn(free_arg);
        return rc > 0 ? 0 : rc;
    }
    if (r->chunked_out) ll = tn__chunk_line(line, len);
    rc = tn__stream_queue_ref(&c->s, line, ll, data, -1, 0, len, "\r\n", ll ? 2 : 0, free_fn, free_arg);
    r->write_failed = rc != 0;
    if (rc) return rc;
    r->out_len += len;
    if (tn__stream_pending(&c->s) >= TN_HTTP_WRITE_LOW) tn__conn_maybe_flush(c);
    return 0;
}

int tn_http_finish(tn_http_request *r) {
    tn__conn *c = r->conn;
    int rc = 0;
    if (r->finished) return TN_ESTATE;
    if (!r->headers_sent) {
        rc = tn__send_head(r, r->status_set ? r->status_set : 200, NULL, 0, 0);
        if (rc && rc != TN_ECLOSED) return rc;
    }
    if (r->write_failed && !r->closed) {
        /* A piece of the body could not be queued and was not retried:
         * a chunked body's last chunk now would pass the rest off as the
         * whole body. Cut it: close without the last chunk. (A
         * close-delimited HTTP/1.0 body cannot tell; a length-delimited
         * one is caught below as short.) */
        c->s.oflags |= TN__C_CLOSE_AFTER;
        r->finished = 1;
        tn__conn_maybe_flush(c);
        return TN_ENOMEM;
    }
    if (r->length_out >= 0 && !r->no_body && r->out_len != (uint64_t)r->length_out) {
        /* A short body: the client must not take it for the whole one, nor
         * reuse the connection (it would read our next bytes as body). */
        c->s.oflags |= TN__C_CLOSE_AFTER;
        rc = TN_EINVAL;
    }
    if (r->chunked_out && !r->closed && tn__stream_queue(&c->s, "0\r\n\r\n", 5)) {
        c->s.oflags |= TN__C_CLOSE_AFTER; /* without its last chunk the body is cut */
        rc = TN_ENOMEM;
    }
    r->finished = 1;
    tn__conn_maybe_flush(c);
    return r->closed ? TN_ECLOSED : rc;
}

/* The respond variants' common start: the head, with room for a copied body. */
static int tn__respond_head(tn_http_request *r, int status, const char *ctype, size_t len, size_t copy) {
    if (r->headers_sent) return TN_ESTATE;
    if (copy > TN_HTTP_WRITE_HIGH && !r->is_head && status != 204 && status != 304) return TN_EFULL;
    return tn__send_head(r, status, ctype, (int64_t)len, copy);
}

static int tn__req_conditional(tn_http_request *r, int status, const char *body, size_t len);
/* The response cache's side of a route (defined with the cache core):
 * reached through the tn_cache, so a program that makes no cache links
 * none of it. */
#if !TN__MINIMAL
static int tn__cache_route_lookup(tn_cache *c, void *req);
static void tn__cache_route_store(tn_cache *c, void *req, int status, const char *ctype, const char *body, size_t len);
#endif

int tn_http_respond(tn_http_request *r, int status, const char *ctype, const char *body, size_t len) {
    int rc;
#if !TN__MINIMAL
    if (r->cache_key && !r->headers_sent) tn__cache_route_store(r->route->opts.cache, r, status, ctype, body, len);
    if (!r->headers_sent && (status = tn__req_conditional(r, status, body, len)) == 304) len = 0;
#endif
    rc = tn__respond_head(r, status, ctype, len, len);
    if (rc == 0 && !r->no_body && len) {
        memcpy(r->conn->s.io->out.data + r->conn->s.io->out.len, body, len); /* room reserved with the head */
        tn__stream_commit(&r->conn->s, len);
    }
    if (rc == 0 || rc == TN_ECLOSED) {
        r->out_len = len;
        r->finished = 1;
    }
    if (rc == 0) tn__conn_maybe_flush(r->conn);
    return r->closed ? TN_ECLOSED : rc;
}

int tn_http_respond_ref(tn_http_request *r, int status, const char *ctype, const char *body, size_t len,
                        tn_free_fn free_fn, void *free_arg) {
    int rc;
#if !TN__MINIMAL
    if (r->cache_key && !r->headers_sent) tn__cache_route_store(r->route->opts.cache, r, status, ctype, body, len);
    if (!r->headers_sent && (status = tn__req_conditional(r, status, body, len)) == 304) len = 0;
#endif
    rc = tn__respond_head(r, status, ctype, len, 0);
    if (rc == 0 && !r->no_body && len) {
        rc = tn__stream_queue_ref(&r->conn->s, NULL, 0, body, -1, 0, len, NULL, 0, free_fn, free_arg);
        if (rc) r->conn->s.oflags |= TN__C_CLOSE_AFTER; /* the head promised a body */
    } else if (free_fn) {
        free_fn(free_arg);
    }
    if (rc == 0 || r->headers_sent) {
        r->out_len = len;
        r->finished = 1;
    }
    if (rc == 0) tn__conn_maybe_flush(r->conn);
    return r->closed ? TN_ECLOSED : rc;
}

/* A future that resolves on the next loop iteration: the turn a streaming
 * handler gives the loop (see tn_http_drain). */
static tn_future *tn__req_yield(tn_http_request *r) {
    r->since_yield = 0;
    return tn_sleep(r->srv->loop, 0);
}

tn_future *tn_http_drain(tn_http_request *r) {
    tn__conn *c = r->conn;
    tn_future *f;
    if (r->closed || (c->s.flags & TN__S_CLOSED)) {
        if ((f = tn_future_new(r->srv->loop)) != NULL) tn_future_fail(f, TN_ECLOSED);
        return f;
    }
    tn__conn_maybe_flush(c);
    if (tn__stream_pending(&c->s) < TN_HTTP_WRITE_LOW) {
        /* Drained already. A fast reader would have the handler run on
         * without the loop ever getting a turn (GET /stream/10000000 held
         * the loop 0.7 s): after every high-water mark of body, wait for
         * the next iteration. */
        if (r->since_yield >= TN_HTTP_WRITE_HIGH) return tn__req_yield(r);
        if ((f = tn_future_new(r->srv->loop)) != NULL) tn_future_resolve(f, NULL);
        return f;
    }
    if (!(f = tn_future_new(r->srv->loop))) return NULL;
    if (r->drain) tn_future_fail(r->drain, TN_ECANCELLED); /* one waiter at a time: the newest wins */
    r->drain = f;
    r->since_yield = 0; /* it resolves from a later iteration's I/O */
    return f;
}

static void tn__req_settle_drain(tn_http_request *r, int err) {
    tn_future *f = r->drain;
    if (!f) return;
    r->drain = NULL;
    if (err) tn_future_fail(f, err);
    else tn_future_resolve(f, NULL);
}

static int tn__req_error(tn_http_request *r, int status);
static int tn__req_strings(tn_http_request *r);
static void tn__req_terminate(tn_http_request *r);
static void tn__req_log(tn_http_request *r);

/* An error answer the server owes a request it routed (or failed to): a
 * 404/405/501, a failed handler's 500, a 503. When it cannot even be built
 * (out of memory) nothing was sent, so the connection closes: left open,
 * the client waits for an answer that never comes, and with pipelining the
 * next request's answer would stand in for this one. */
static void tn__req_answer_or_close(tn__conn *c, tn_http_request *r, int status) {
    tn__req_error(r, status);
    if (!r->headers_sent) {
        r->finished = 1;
        c->s.oflags |= TN__C_CLOSE_AFTER;
    }
}

/* ---------------------------------------------------- error responses */
static int tn__conn_error(tn__conn *c, int status) {
    tn_http_request *r = c->req;
    const char *reason = tn_http_reason(status);
    size_t rl = strlen(reason), bl = 4 + rl + 1; /* "413 Content Too Large\n" */
    int head = r && r->is_head;
    char *p;
    tn__http_date(c->srv);
    /* A 408 went to a client too slow to be worth lingering for. */
    c->s.oflags |= TN__C_CLOSE_AFTER | (status == 408 ? 0u : TN__C_CUT);
    tn__list_del(c); /* closing: no read timeout may answer again */
    tn__stream_set_reading(&c->s, 0);
    if (r && r->headers_sent) { /* mid-response: all we can do is close */
        tn__conn_close(c);
        return 0;
    }
    if (r) r->status = status;
    /* A parsed head (413, 503, a body's 408...) goes through the error
     * hook; without a hook, or an unparsed head, the answer below. */
    if (r && r->head_len && c->srv->opts.on_error && tn__req_strings(r) == 0) {
        if (status == 503) tn_http_set_header(r, "Retry-After", "1");
        tn__req_error(r, status);
    }
    p = r && r->headers_sent ? NULL : tn__stream_room(&c->s, TN__STATUS_ROOM + 160 + 2 * rl);
    if (p) {
        char *start = p;
        p = tn__put_status(p, c->srv, 1, status, reason);
        p = tn__put(p, "Content-Type: " TN__DEFAULT_CTYPE "\r\nContent-Length: ",
                    sizeof "Content-Type: " TN__DEFAULT_CTYPE "\r\nContent-Length: " - 1);
        p = tn__put_u64(p, bl, 0);
        if (status == 503) p = tn__put(p, "\r\nRetry-After: 1", 16);
        p = tn__put(p, "\r\nConnection: close\r\n\r\n", 23);
        if (!head) {
            p = tn__put_u64(p, (uint64_t)status, 0);
            *p++ = ' ';
            p = tn__put(p, reason, rl);
            *p++ = '\n';
        }
        tn__stream_commit(&c->s, (size_t)(p - start));
        if (r) r->out_len = head ? 0 : bl; /* for the access log */
    }
    if (r && r->state != TN__RQ_HANDLER) {
#if !TN__MINIMAL
        tn__req_log(r);
#endif
        c->req = NULL;
        tn__req_put(c->srv, r);
    }
    /* Outside a batch (a timer's 408, a shed 503) a failed write closes,
     * and frees, the connection here: it must not be touched after. */
    if (!(c->s.oflags & TN__C_IN_BATCH) && tn__conn_flush(c)) return 0;
    if (!(c->s.flags & TN__S_CLOSED) && !tn__stream_pending(&c->s)) {
        if (status == 408) tn__conn_close(c);
        else tn__conn_linger(c);
    }
    return 0;
}

/* ------------------------------------------------------------ routing */
static int tn__method_known(const char *m, size_t n) {
    static const char *const known[] = {"GET", "HEAD", "POST", "PUT", "DELETE",
                                        "CONNECT", "OPTIONS", "TRACE", "PATCH"};
    size_t i;
    for (i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strlen(known[i]) == n && memcmp(known[i], m, n) == 0) return 1;
    return 0;
}

/* Matches the raw path (no query) against a pattern; fills r->params with
 * raw (still percent-encoded) values, decoded later. */
static int tn__route_match(const tn__route *rt, const char *path, size_t plen, tn_http_request *r) {
    const char *pat = rt->pattern;
    size_t patlen = rt->pattern_len;
#if TN__MINIMAL /* exact paths only */
    (void)r;
    return patlen == plen && memcmp(pat, path, plen) == 0;
#else
    size_t pi = 0, si = 0, np = 0;
    while (pi < patlen) {
        if (pat[pi] == '{') {
            const char *close = strchr(pat + pi, '}');
            size_t nlen = (size_t)(close - (pat + pi + 1));
            int tail = nlen && pat[pi + nlen] == '*';
            size_t start = si;
            if (tail) {
                si = plen;
                nlen--;
            } else {
                while (si < plen && path[si] != '/') si++;
                if (si == start) return 0; /* a {param} is never empty */
            }
            if (np < TN_HTTP_MAX_PARAMS) {
                r->params[np].name = pat + pi + 1;
                r->params[np].name_len = nlen;
                r->params[np].raw = path + start;
                r->params[np].raw_len = si - start;
                r->params[np].value = NULL; /* until tn__req_strings decodes it */
                np++;
            }
            pi = (size_t)(close - pat) + 1;
            continue;
        }
        if (si >= plen || pat[pi] != path[si]) return 0;
        pi++;
        si++;
    }
    if (si != plen) return 0;
    r->nparams = np;
    return 1;
#endif
}

static int tn__hexval(int ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* Percent-decodes src[0..n) to dst and NUL-terminates it; an invalid escape
 * stays as it is (as Python's unquote). Returns the decoded length. */
static size_t tn__pct_decode(char *dst, const char *src, size_t n, int plus_is_space) {
    size_t i, o = 0;
    for (i = 0; i < n; i++) {
        int hi, lo;
        if (src[i] == '%' && i + 2 < n && (hi = tn__hexval((unsigned char)src[i + 1])) >= 0 &&
            (lo = tn__hexval((unsigned char)src[i + 2])) >= 0) {
            dst[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else if (plus_is_space && src[i] == '+') {
            dst[o++] = ' ';
        } else {
            dst[o++] = src[i];
        }
    }
    dst[o] = 0;
    return o;
}

static char *tn__scratch(tn_http_request *r, size_t n) {
    char *p;
    if (r->scratch_cap - r->scratch_len < n) return NULL; /* sized at dispatch */
    p = r->scratch + r->scratch_len;
    r->scratch_len += n;
    return p;
}

/* The raw path of the request-target (no query): origin-form as it is,
 * absolute-form after its authority ("http://h" alone is "/"). Returns 0,
 * or -1 for the forms that have no path (authority, asterisk). */
/* Where the target's query starts and whether it has a '%': one walk of
 * the target for routing, the path, the arguments and the pair count,
 * which each looked for them. */
static void tn__req_target_facts(tn_http_request *r) {
    const char *t = r->msg.target;
    size_t n = r->msg.target_len, i;
    int pct = 0;
    for (i = 0; i < n && t[i] != '?'; i++) pct |= t[i] == '%';
    r->path_end = i;
    r->target_pct = pct || (i < n && memchr(t + i, '%', n - i));
}

static int tn__req_raw_path_abs(const tn_http_request *r, const char **path, size_t *len);
static int tn__req_raw_path(const tn_http_request *r, const char **path, size_t *len) {
    if (r->path_end && r->msg.target[0] == '/') { /* origin-form: small enough to inline */
        *path = r->msg.target;
        *len = r->path_end;
        return 0;
    }
    return tn__req_raw_path_abs(r, path, len);
}
static int tn__req_raw_path_abs(const tn_http_request *r, const char **path, size_t *len) {
    const char *t = r->msg.target;
    size_t pl = r->path_end;
    if (pl >= 7 && tn__http_ieq(t, 7, "http://")) {
        const char *p = (const char *)memchr(t + 7, '/', pl - 7);
        *path = p ? p : "/";
        *len = p ? pl - (size_t)(p - t) : 1;
        return 0;
    }
    return -1;
}

/* Picks the route (or the status that answers instead). */
static int tn__req_route(tn_http_request *r) {
    tn_http_server *srv = r->srv;
    const char *m = r->msg.method, *t;
    size_t ml = r->msg.method_len, pl, i;
    int path_matched = 0, custom_method = 0, head = ml == 4 && memcmp(m, "HEAD", 4) == 0;
    /* authority-form (CONNECT) and asterisk-form (OPTIONS *) route nowhere */
    if (tn__req_raw_path(r, &t, &pl)) return (ml == 7 && memcmp(m, "OPTIONS", 7) == 0) ? 404 : 400;
    /* HEAD: a HEAD route of the path first; else, in route order, the GET
     * routes serve it along with any-method ones (a catch-all registered
     * after the GET routes must not take their HEADs). */
    if (head) {
        for (i = 0; i < srv->nroutes; i++) {
            const tn__route *rt = &srv->routes[i];
            if (rt->method && strcmp(rt->method, "HEAD") == 0 && tn__route_match(rt, t, pl, r)) {
                r->route = rt;
                return 0;
            }
        }
    }
    for (i = 0; i < srv->nroutes; i++) {
        const tn__route *rt = &srv->routes[i];
        int same = rt->method && rt->method_len == ml && memcmp(rt->method, m, ml) == 0;
        custom_method |= same;
        if (!tn__route_match(rt, t, pl, r)) continue;
        path_matched = 1;
        if (!rt->method || same || (head && strcmp(rt->method, "GET") == 0)) {
            r->route = rt;
            return 0;
        }
    }
    if (!custom_method && !tn__method_known(m, ml)) return 501;
    return path_matched ? 405 : 404;
}

/* The Allow header of a 405: every method routed for this path. */
static void tn__req_allow(tn_http_request *r, char *out, size_t cap) {
    tn_http_server *srv = r->srv;
    const char *t;
    size_t pl, i, o = 0;
    int has_get = 0, has_head = 0;
    out[0] = 0;
    if (tn__req_raw_path(r, &t, &pl)) return;
    for (i = 0; i < srv->nroutes; i++) {
        const tn__route *rt = &srv->routes[i];
        size_t n;
        if (!rt->method || !tn__route_match(rt, t, pl, r)) continue;
        n = strlen(rt->method);
        if (strstr(out, rt->method)) continue;
        if (o + n + 3 >= cap) break;
        if (o) {
            memcpy(out + o, ", ", 2);
            o += 2;
        }
        memcpy(out + o, rt->method, n + 1);
        o += n;
        if (strcmp(rt->method, "GET") == 0) has_get = 1;
        if (strcmp(rt->method, "HEAD") == 0) has_head = 1;
    }
    if (has_get && !has_head && o + 7 < cap) memcpy(out + o, ", HEAD", 7);
}

/* ------------------------------------------------------ request arena
 * What the web layer derives from a request (arguments, cookies, file
 * parts, decoded credentials) lives in blocks freed with the request: at
 * most a few times the request's own bytes (its head and buffered body). */
typedef struct tn__arena {
    struct tn__arena *next;
    size_t used, cap;
} tn__arena; /* the block's bytes follow it */

static void *tn__req_alloc(tn_http_request *r, size_t n) {
    tn__arena *a = r->arena;
    n = (n + 7) & ~(size_t)7;
    if (!a || a->cap - a->used < n) {
        size_t cap = n > 4096 ? n : 4096;
        if (!(a = (tn__arena *)tn__malloc(r->srv->loop, sizeof *a + cap))) return NULL;
        a->next = r->arena;
        a->used = 0;
        a->cap = cap;
        r->arena = a;
    }
    a->used += n;
    return (char *)(a + 1) + a->used - n;
}

static void tn__req_arena_free(tn_http_request *r) {
    while (r->arena) {
        tn__arena *next = r->arena->next;
        tn__free(r->arena);
        r->arena = next;
    }
}

static char *tn__req_strdup(tn_http_request *r, const char *s, size_t n) {
    char *d = (char *)tn__req_alloc(r, n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

/* -------------------------------------------------------------- arguments
 * Tornado's request arguments: the query's, and the body's for
 * application/x-www-form-urlencoded and multipart/form-data (parsed at
 * dispatch: a malformed one is answered 400 before the handler runs). */
typedef struct tn__kv {
    const char *name, *value;
    size_t value_len;
} tn__kv;

/* Counts the pairs of a urlencoded string (what a parse will need). */
static size_t tn__form_pairs(const char *s, size_t n) {
    size_t k = 1, i;
    for (i = 0; i < n; i++) k += s[i] == '&';
    return k;
}

/* Decodes "a=1&b=2&a=3" into kv (its pairs, in order) with the strings in
 * the arena. Returns the count, or (size_t)-1 out of memory. */
static size_t tn__form_parse(tn_http_request *r, const char *q, size_t n, tn__kv **out) {
    const char *end = q + n;
    size_t cap = tn__form_pairs(q, n), k = 0;
    tn__kv *kv = (tn__kv *)tn__req_alloc(r, cap * sizeof *kv);
    char *o = (char *)tn__req_alloc(r, n + 2 * cap);
    if (!kv || !o) return (size_t)-1;
    while (q < end) {
        const char *amp = (const char *)memchr(q, '&', (size_t)(end - q));
        const char *stop = amp ? amp : end;
        const char *eq = (const char *)memchr(q, '=', (size_t)(stop - q));
        const char *nend = eq ? eq : stop;
        if (stop > q) {
            kv[k].name = o;
            o += tn__pct_decode(o, q, (size_t)(nend - q), 1) + 1;
            kv[k].value = o;
            kv[k].value_len = eq ? tn__pct_decode(o, eq + 1, (size_t)(stop - eq - 1), 1) : tn__pct_decode(o, "", 0, 1);
            o += kv[k].value_len + 1;
            k++;
        }
        q = stop + (amp ? 1 : 0);
    }
    *out = kv;
    return k;
}

/* The query's arguments, decoded once on first use. */
static void tn__req_query_args(tn_http_request *r) {
    const char *t = r->msg.target, *q;
    size_t n;
    if (r->args_state & 1) return;
    r->args_state |= 1;
    if (r->path_end == r->msg.target_len) return;
    q = t + r->path_end + 1;
    n = r->msg.target_len - (size_t)(q - t);
    n = (size_t)((const char *)memchr(q, '#', n) ? (const char *)memchr(q, '#', n) - q : (ptrdiff_t)n);
    r->nq = tn__form_parse(r, q, n, &r->qargs);
    if (r->nq == (size_t)-1) r->nq = 0; /* out of memory: none (the 503 is the handler's call) */
}

/* The last (or all) values of name among kv. */
static const char *tn__kv_last(const tn__kv *kv, size_t n, const char *name) {
    const char *v = NULL;
    size_t i;
    for (i = 0; i < n; i++)
        if (strcmp(kv[i].name, name) == 0) v = kv[i].value;
    return v;
}
static size_t tn__kv_all(const tn__kv *kv, size_t n, const char *name, const char **out, size_t max, size_t k) {
    size_t i;
    for (i = 0; i < n; i++)
        if (strcmp(kv[i].name, name) == 0) {
            if (k < max && out) out[k] = kv[i].value;
            k++;
        }
    return k;
}

const char *tn_http_query(tn_http_request *r, const char *name) {
    size_t i;
    tn__req_query_args(r);
    for (i = 0; i < r->nq; i++)
        if (strcmp(r->qargs[i].name, name) == 0) return r->qargs[i].value;
    return NULL;
}

const char *tn_http_query_argument(tn_http_request *r, const char *name, const char *def) {
    const char *v;
    tn__req_query_args(r);
    v = tn__kv_last(r->qargs, r->nq, name);
    return v ? v : def;
}
size_t tn_http_query_arguments(tn_http_request *r, const char *name, const char **out, size_t max) {
    tn__req_query_args(r);
    return tn__kv_all(r->qargs, r->nq, name, out, max, 0);
}
const char *tn_http_body_argument(tn_http_request *r, const char *name, const char *def) {
    const char *v = tn__kv_last(r->bargs, r->nb, name);
    return v ? v : def;
}
size_t tn_http_body_arguments(tn_http_request *r, const char *name, const char **out, size_t max) {
    return tn__kv_all(r->bargs, r->nb, name, out, max, 0);
}
/* Tornado's get_argument: the query's and the body's, the last wins. */
const char *tn_http_argument(tn_http_request *r, const char *name, const char *def) {
    const char *v = tn__kv_last(r->bargs, r->nb, name);
    if (!v) v = tn_http_query_argument(r, name, NULL);
    return v ? v : def;
}
size_t tn_http_arguments(tn_http_request *r, const char *name, const char **out, size_t max) {
    size_t k;
    tn__req_query_args(r);
    k = tn__kv_all(r->qargs, r->nq, name, out, max, 0);
    return tn__kv_all(r->bargs, r->nb, name, out, max, k);
}
size_t tn_http_argument_count(tn_http_request *r) {
    tn__req_query_args(r);
    return r->nq + r->nb;
}
int tn_http_argument_at(tn_http_request *r, size_t i, const char **name, const char **value) {
    const tn__kv *kv;
    tn__req_query_args(r);
    if (i >= r->nq + r->nb) return TN_ENOENT;
    kv = i < r->nq ? &r->qargs[i] : &r->bargs[i - r->nq];
    *name = kv->name;
    *value = kv->value;
    return 0;
}

size_t tn_http_file_count(const tn_http_request *r) { return r->nfiles; }
const tn_http_file *tn_http_file_at(const tn_http_request *r, size_t i) { return i < r->nfiles ? &r->files[i] : NULL; }
const tn_http_file *tn_http_get_file(const tn_http_request *r, const char *name) {
    size_t i;
    for (i = 0; i < r->nfiles; i++)
        if (strcmp(r->files[i].name, name) == 0) return &r->files[i];
    return NULL;
}

/* The media type of a Content-Type value equals type (case-insensitive,
 * parameters ignored). */
static int tn__ctype_is_n(const char *ct, size_t len, const char *type) {
    size_t k = 0;
    while (k < len && ct[k] != ';' && ct[k] != ' ' && ct[k] != '\t') k++;
    return tn__http_ieq(ct, k, type);
}
static int tn__ctype_is(const char *ct, const char *type) { return ct && tn__ctype_is_n(ct, strlen(ct), type); }

/* The buffered body's parts as arguments and files (see tn__req_body_args). */
typedef struct tn__form_build {
    tn_http_request *r;
    size_t nb, nfiles, cap_b, cap_f;
    int file; /* the current part is a file */
    const char *data;
    size_t len;
    tn_http_part part;
} tn__form_build;

static int tn__form_on_part(void *arg, int event, const tn_http_part *part, const char *data, size_t len) {
    tn__form_build *b = (tn__form_build *)arg;
    tn_http_request *r = b->r;
    if (event == TN_MP_BEGIN) {
        b->part = *part;
        b->file = part->filename != NULL;
        b->data = NULL;
        b->len = 0;
        return 0;
    }
    if (event == TN_MP_DATA) {
        /* Fed the whole body in one call, a part's data comes as one
         * piece, within the body. */
        if (!b->data) b->data = data;
        b->len += len;
        return 0;
    }
    if (b->file) {
        tn_http_file *f;
        if (b->nfiles == b->cap_f) return TN_ETOOLARGE; /* cannot happen: counted first */
        f = &r->files[b->nfiles++];
        if (!(f->name = tn__req_strdup(r, b->part.name, strlen(b->part.name))) ||
            !(f->filename = tn__req_strdup(r, b->part.filename, strlen(b->part.filename))))
            return TN_ENOMEM;
        f->content_type = b->part.content_type ? tn__req_strdup(r, b->part.content_type, strlen(b->part.content_type))
                                               : "application/octet-stream";
        if (!f->content_type) return TN_ENOMEM;
        f->data = b->data ? b->data : "";
        f->len = b->len;
    } else {
        tn__kv *kv;
        if (b->nb == b->cap_b) return TN_ETOOLARGE;
        kv = &r->bargs[b->nb++];
        if (!(kv->name = tn__req_strdup(r, b->part.name, strlen(b->part.name))) ||
            !(kv->value = tn__req_strdup(r, b->data ? b->data : "", b->len)))
            return TN_ENOMEM;
        kv->value_len = b->len;
    }
    return 0;
}

/* Parses a buffered form body into the request's arguments and files.
 * 0, or the status to answer instead of running the handler (400, 413,
 * 503). */
TN__UNUSED static int tn__req_body_args(tn_http_request *r) {
    const char *ct;
    size_t len;
    const char *body = tn_http_body(r, &len);
    if (!len || r->route->opts.on_body) return 0; /* a GET: no lookup at all */
    ct = tn_http_get_header(r, "Content-Type");
    if (tn__ctype_is(ct, "application/x-www-form-urlencoded")) {
        if (tn__form_pairs(body, len) > TN_HTTP_MAX_ARGS) return 413;
        r->nb = tn__form_parse(r, body, len, &r->bargs);
        if (r->nb == (size_t)-1) {
            r->nb = 0;
            return 503;
        }
        return 0;
    }
    if (tn__ctype_is(ct, "multipart/form-data")) {
        tn_multipart mp;
        tn__form_build b;
        int rc;
        memset(&b, 0, sizeof b);
        b.r = r;
        /* Room for every part either way; the parser bounds their number. */
        b.cap_b = b.cap_f = TN_HTTP_MAX_PARTS;
        if (tn_multipart_begin(&mp, ct)) return 400;
        if (!(r->bargs = (tn__kv *)tn__req_alloc(r, b.cap_b * sizeof *r->bargs)) ||
            !(r->files = (tn_http_file *)tn__req_alloc(r, b.cap_f * sizeof *r->files)))
            return 503;
        rc = tn_multipart_feed(&mp, body, len, tn__form_on_part, &b);
        if (!rc) rc = tn_multipart_end(&mp);
        r->nb = b.nb;
        r->nfiles = b.nfiles;
        if (rc == TN_ENOMEM) return 503;
        if (rc == TN_ETOOLARGE) return 413;
        if (rc) return 400;
    }
    return 0;
}

/* ------------------------------------------------------------- multipart
 * multipart/form-data (RFC 7578; delimiters as RFC 2046 section 5.1.1): an
 * incremental parser over any split of the body, for a buffered body (the
 * server feeds it whole at dispatch) and a streamed one (on_body feeds it
 * piece by piece: an upload to disk needs no whole-body buffer). Part
 * heads reuse the head scan and the field-line parser. */
#define TN__MP_PREAMBLE 0
#define TN__MP_AFTER_DELIM 1 /* after "--boundary": LWSP, then CRLF or "--" */
#define TN__MP_AFTER_DASH 2
#define TN__MP_AFTER_CR 3
#define TN__MP_HEAD 4
#define TN__MP_DATA 5
#define TN__MP_EPILOGUE 6 /* after the closing delimiter: ignored */

/* The parameter want of a header value v[0..n) ("type; a=1; b=\"x\""):
 * its value, decoded (a token or a quoted-string), copied to dst with a
 * NUL. 1 found, 0 absent, -1 malformed or longer than cap - 1. */
static int tn__param_get(const char *v, size_t n, const char *want, char *dst, size_t cap, size_t *outlen) {
    const char *p = v, *end = v + n;
    while ((p = (const char *)memchr(p, ';', (size_t)(end - p))) != NULL) {
        const char *name;
        size_t nl, o = 0;
        int match;
        p++;
        while (p < end && tn__http_is_ows((unsigned char)*p)) p++;
        for (name = p; p < end && tn__http_is_tchar((unsigned char)*p); p++) {}
        nl = (size_t)(p - name);
        while (p < end && tn__http_is_ows((unsigned char)*p)) p++;
        if (!nl || p == end || *p != '=') return -1;
        p++;
        while (p < end && tn__http_is_ows((unsigned char)*p)) p++;
        match = tn__http_ieq(name, nl, want);
        if (p < end && *p == '"') {
            for (p++; p < end && *p != '"'; p++) {
                if (*p == '\\' && p + 1 < end) p++;
                if (match) {
                    if (o + 1 >= cap) return -1;
                    dst[o++] = *p;
                }
            }
            if (p == end) return -1; /* unterminated */
            p++;
        } else {
            const char *s = p;
            while (p < end && tn__http_is_tchar((unsigned char)*p)) p++;
            if (p == s) return -1;
            if (match) {
                if ((size_t)(p - s) >= cap) return -1;
                memcpy(dst, s, (size_t)(p - s));
                o = (size_t)(p - s);
            }
        }
        if (match) {
            dst[o] = 0;
            if (outlen) *outlen = o;
            return 1;
        }
    }
    return 0;
}

int tn_multipart_begin(tn_multipart *mp, const char *content_type) {
    size_t bl = 0, i;
    memset(mp, 0, sizeof *mp);
    mp->err = TN_EMALFORMED;
    if (!tn__ctype_is(content_type, "multipart/form-data")) return TN_EMALFORMED;
    memcpy(mp->delim, "\r\n--", 4);
    if (tn__param_get(content_type, strlen(content_type), "boundary", mp->delim + 4, sizeof mp->delim - 4, &bl) != 1 ||
        bl == 0 || bl > 70)
        return TN_EMALFORMED;
    for (i = 0; i < bl; i++)
        if ((unsigned char)mp->delim[4 + i] < 0x20 || mp->delim[4 + i] == 0x7f) return TN_EMALFORMED;
    mp->dlen = 4 + bl;
    mp->state = TN__MP_PREAMBLE;
    mp->match = 2; /* the first delimiter may open the body: as if a CRLF came before */
    mp->err = 0;
    return 0;
}

/* A part's head is complete in mp->head: its Content-Disposition gives the
 * field name (and a filename for a file), Content-Type its type. */
static int tn__mp_head_done(tn_multipart *mp) {
    tn__http_scan_opts o;
    tn_http_header h[16];
    size_t nh = 0, i, used = 0, len;
    const tn_http_header *disp = NULL, *type = NULL;
    int n, rc;
    o.max_bytes = sizeof mp->head;
    o.max_target = 0;
    o.start_line = 0;
    n = tn__http_scan(mp->head, mp->head_len, 0, &o);
    if (n != (int)mp->head_len) return TN_EMALFORMED;
    if (tn__http_parse_fields(mp->head, mp->head + n, h, 16, &nh)) return TN_EMALFORMED;
    for (i = 0; i < nh; i++) {
        if (tn_http_header_eq(&h[i], "content-disposition")) disp = &h[i];
        else if (tn_http_header_eq(&h[i], "content-type")) type = &h[i];
    }
    if (!disp || !tn__ctype_is_n(disp->value, disp->value_len, "form-data")) return TN_EMALFORMED;
    memset(&mp->part, 0, sizeof mp->part);
    rc = tn__param_get(disp->value, disp->value_len, "name", mp->strs, sizeof mp->strs, &len);
    if (rc != 1) return TN_EMALFORMED;
    mp->part.name = mp->strs;
    used = len + 1;
    rc = tn__param_get(disp->value, disp->value_len, "filename", mp->strs + used, sizeof mp->strs - used, &len);
    if (rc < 0) return TN_EMALFORMED;
    if (rc == 1 && len) { /* an empty filename is no file (an empty file input), as Tornado */
        mp->part.filename = mp->strs + used;
        used += len + 1;
    }
    if (type) {
        if (type->value_len + 1 > sizeof mp->strs - used) return TN_EMALFORMED;
        memcpy(mp->strs + used, type->value, type->value_len);
        mp->strs[used + type->value_len] = 0;
        mp->part.content_type = mp->strs + used;
    }
    return 0;
}

int tn_multipart_feed(tn_multipart *mp, const char *data, size_t len, tn_multipart_fn fn, void *arg) {
    size_t i = 0, span = 0, ms = 0; /* span: this call's pending data from here; ms: where a match began */
    int here = 0; /* the match under way began in this call (its bytes are in data) */
    int rc;
#define TN__MP_FAIL(e) do { mp->err = (e); return mp->err; } while (0)
#define TN__MP_EMIT(p, n) do { if ((n) && (rc = fn(arg, TN_MP_DATA, &mp->part, (p), (n))) != 0) TN__MP_FAIL(rc); } while (0)
    if (mp->err) return mp->err;
    while (i < len) {
        unsigned char c = (unsigned char)data[i];
        switch (mp->state) {
        case TN__MP_PREAMBLE:
        case TN__MP_DATA:
            if (mp->match) {
                if (c == (unsigned char)mp->delim[mp->match]) {
                    i++;
                    if (++mp->match < mp->dlen) continue;
                    /* A delimiter: the part's data ends where it began. */
                    if (mp->state == TN__MP_DATA) {
                        TN__MP_EMIT(data + span, here ? ms - span : 0);
                        if ((rc = fn(arg, TN_MP_END, &mp->part, NULL, 0)) != 0) TN__MP_FAIL(rc);
                    }
                    mp->match = 0;
                    mp->state = TN__MP_AFTER_DELIM;
                    continue;
                }
                /* Not a delimiter: what matched is data. Only a CR starts
                 * one (a boundary holds no CR), so c is looked at afresh. */
                if (!here && mp->state == TN__MP_DATA) {
                    TN__MP_EMIT(mp->delim, mp->match);
                    span = i;
                }
                mp->match = 0;
                continue;
            }
            {
                const char *cr = (const char *)memchr(data + i, '\r', len - i);
                if (!cr) {
                    i = len;
                    break;
                }
                i = (size_t)(cr - data);
                ms = i++;
                here = 1;
                mp->match = 1;
            }
            break;
        case TN__MP_AFTER_DELIM:
            i++;
            if (c == ' ' || c == '\t') break;
            if (c == '-') mp->state = TN__MP_AFTER_DASH;
            else if (c == '\r') mp->state = TN__MP_AFTER_CR;
            else TN__MP_FAIL(TN_EMALFORMED);
            break;
        case TN__MP_AFTER_DASH:
            i++;
            if (c != '-') TN__MP_FAIL(TN_EMALFORMED);
            mp->state = TN__MP_EPILOGUE;
            break;
        case TN__MP_AFTER_CR:
            i++;
            if (c != '\n') TN__MP_FAIL(TN_EMALFORMED);
            if (++mp->parts > TN_HTTP_MAX_PARTS) TN__MP_FAIL(TN_ETOOLARGE);
            mp->head_len = 0;
            mp->state = TN__MP_HEAD;
            break;
        case TN__MP_HEAD: {
            /* Up to the empty line: "\r\n" alone (no fields) or "\r\n\r\n". */
            size_t h = mp->head_len;
            if (h == sizeof mp->head) TN__MP_FAIL(TN_EMALFORMED);
            mp->head[mp->head_len++] = (char)c;
            i++;
            if (c != '\n') break;
            h = mp->head_len;
            if (!((h == 2 && mp->head[0] == '\r') || (h >= 4 && memcmp(mp->head + h - 4, "\r\n\r\n", 4) == 0))) break;
            if ((rc = tn__mp_head_done(mp)) != 0) TN__MP_FAIL(rc);
            if ((rc = fn(arg, TN_MP_BEGIN, &mp->part, NULL, 0)) != 0) TN__MP_FAIL(rc);
            mp->state = TN__MP_DATA;
            span = i;
            here = 0;
            break;
        }
        default: /* the epilogue */
            i = len;
            break;
        }
    }
    /* The end of this piece: the data so far goes, but for a match under
     * way (held back: the next piece tells whether it is a delimiter). */
    if (mp->state == TN__MP_DATA) TN__MP_EMIT(data + span, (mp->match ? (here ? ms : span) : len) - span);
    return 0;
#undef TN__MP_EMIT
#undef TN__MP_FAIL
}

int tn_multipart_end(tn_multipart *mp) {
    if (mp->err) return mp->err;
    return mp->state == TN__MP_EPILOGUE ? 0 : TN_EMALFORMED;
}

/* ---------------------------------------------------------------- cookies */
/* The request's cookies (every Cookie field, "a=1; b=2"), parsed once. */
static void tn__req_cookies(tn_http_request *r) {
    size_t i, cap = 0, k = 0;
    if (r->cookies_parsed) return;
    r->cookies_parsed = 1;
    for (i = 0; i < r->msg.num_headers; i++)
        if (tn_http_header_eq(&r->msg.headers[i], "cookie")) {
            const char *v = r->msg.headers[i].value;
            size_t j;
            for (j = 0, cap++; j < r->msg.headers[i].value_len; j++) cap += v[j] == ';';
        }
    if (!cap || !(r->cookies = (tn__kv *)tn__req_alloc(r, cap * sizeof *r->cookies))) return;
    for (i = 0; i < r->msg.num_headers; i++) {
        const char *p, *end;
        if (!tn_http_header_eq(&r->msg.headers[i], "cookie")) continue;
        p = r->msg.headers[i].value;
        end = p + r->msg.headers[i].value_len;
        while (p < end && k < cap) {
            const char *semi = (const char *)memchr(p, ';', (size_t)(end - p)), *stop = semi ? semi : end, *eq, *ns, *ne, *vs, *ve;
            for (ns = p; ns < stop && (*ns == ' ' || *ns == '\t'); ns++) {}
            eq = (const char *)memchr(ns, '=', (size_t)(stop - ns));
            if (eq && eq > ns) {
                for (ne = eq; ne > ns && (ne[-1] == ' ' || ne[-1] == '\t'); ne--) {}
                for (vs = eq + 1; vs < stop && (*vs == ' ' || *vs == '\t'); vs++) {}
                for (ve = stop; ve > vs && (ve[-1] == ' ' || ve[-1] == '\t'); ve--) {}
                if (ve - vs >= 2 && *vs == '"' && ve[-1] == '"') { /* a quoted value: the quotes go */
                    vs++;
                    ve--;
                }
                r->cookies[k].name = tn__req_strdup(r, ns, (size_t)(ne - ns));
                r->cookies[k].value = tn__req_strdup(r, vs, (size_t)(ve - vs));
                r->cookies[k].value_len = (size_t)(ve - vs);
                if (!r->cookies[k].name || !r->cookies[k].value) break;
                k++;
            }
            p = stop + (semi ? 1 : 0);
        }
    }
    r->ncookies = k;
}

const char *tn_http_cookie(tn_http_request *r, const char *name) {
    tn__req_cookies(r);
    return tn__kv_last(r->cookies, r->ncookies, name);
}
size_t tn_http_cookie_count(tn_http_request *r) {
    tn__req_cookies(r);
    return r->ncookies;
}
int tn_http_cookie_at(tn_http_request *r, size_t i, const char **name, const char **value) {
    tn__req_cookies(r);
    if (i >= r->ncookies) return TN_ENOENT;
    *name = r->cookies[i].name;
    *value = r->cookies[i].value;
    return 0;
}

/* RFC 6265 cookie-octet: no CTL, whitespace, DQUOTE, comma, semicolon or
 * backslash (so no header can be injected through a value). */
static int tn__cookie_octets(const char *s, size_t n) {
    size_t i;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f || c == '"' || c == ',' || c == ';' || c == '\\') return 0;
    }
    return 1;
}
/* A Path or Domain attribute: text without ';' or control bytes. */
static int tn__cookie_attr_ok(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f || *s == ';') return 0;
    return 1;
}

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian): no timegm needed. */
static int64_t tn__days_from_civil(int64_t y, unsigned m, unsigned d) {
    int64_t era;
    unsigned yoe, doy, doe;
    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = (unsigned)(y - era * 400);
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

/* An IMF-fixdate to seconds since the epoch; -1 if it is not one (the
 * obsolete RFC 850 and asctime forms are not accepted: then the
 * conditional is ignored, which is always safe). */
static int64_t tn__parse_http_date(const char *s) {
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    int d, y, hh, mm, ss, m;
    char mon[4];
    const char *p;
    if (!s || strlen(s) != 29 || s[3] != ',' || strcmp(s + 25, " GMT") != 0) return -1;
    if (sscanf(s + 5, "%2d %3s %4d %2d:%2d:%2d", &d, mon, &y, &hh, &mm, &ss) != 6) return -1;
    if (!(p = strstr(months, mon)) || (p - months) % 3) return -1;
    m = (int)(p - months) / 3 + 1;
    if (d < 1 || d > 31 || hh > 23 || mm > 59 || ss > 60) return -1;
    return tn__days_from_civil(y, (unsigned)m, (unsigned)d) * 86400 + hh * 3600 + mm * 60 + ss;
}

int tn_http_set_cookie(tn_http_request *r, const char *name, const char *value, const tn_http_cookie_opts *o) {
    char line[4096];
    size_t nl, vl, n;
    const char *path = o && o->path ? o->path : "/";
    if (!name || !value) return TN_EINVAL;
    nl = strlen(name);
    vl = strlen(value);
    if (!nl) return TN_EINVAL;
    for (n = 0; n < nl; n++)
        if (!tn__http_is_tchar((unsigned char)name[n])) return TN_EINVAL;
    if (!tn__cookie_octets(value, vl) || !tn__cookie_attr_ok(path) || (o && o->domain && !tn__cookie_attr_ok(o->domain)))
        return TN_EINVAL;
    if (o && o->same_site && !(strcmp(o->same_site, "Lax") == 0 || strcmp(o->same_site, "Strict") == 0 ||
                               strcmp(o->same_site, "None") == 0))
        return TN_EINVAL;
    n = (size_t)snprintf(line, sizeof line, "%s=%s", name, value);
    if (o && o->domain && n < sizeof line) n += (size_t)snprintf(line + n, sizeof line - n, "; Domain=%s", o->domain);
    if (o && o->expires && n < sizeof line) {
        char d[32];
        d[tn__fmt_http_date(d, (time_t)o->expires)] = 0;
        n += (size_t)snprintf(line + n, sizeof line - n, "; Expires=%s", d);
    }
    if (o && o->max_age && n < sizeof line)
        n += (size_t)snprintf(line + n, sizeof line - n, "; Max-Age=%lld", (long long)(o->max_age < 0 ? 0 : o->max_age));
    if (n < sizeof line) n += (size_t)snprintf(line + n, sizeof line - n, "; Path=%s", path);
    if (o && o->secure && n < sizeof line) n += (size_t)snprintf(line + n, sizeof line - n, "; Secure");
    if (o && o->http_only && n < sizeof line) n += (size_t)snprintf(line + n, sizeof line - n, "; HttpOnly");
    if (o && o->same_site && n < sizeof line) n += (size_t)snprintf(line + n, sizeof line - n, "; SameSite=%s", o->same_site);
    if (n >= sizeof line) return TN_EINVAL; /* never a cut cookie */
    return tn_http_add_header(r, "Set-Cookie", line);
}

int tn_http_clear_cookie(tn_http_request *r, const char *name, const char *path, const char *domain) {
    tn_http_cookie_opts o;
    memset(&o, 0, sizeof o);
    o.path = path;
    o.domain = domain;
    o.expires = 1; /* Thu, 01 Jan 1970 00:00:01 GMT: long gone */
    o.max_age = -1; /* "Max-Age=-1": expire now (RFC 6265 5.2.2: <= 0) */
    return tn_http_set_cookie(r, name, "", &o);
}

/* ------------------------------------------------------------ basic auth */
static int tn__b64_val(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Decodes standard base64 (padding optional) into dst; the length, or -1. */
static long tn__b64_decode(char *dst, const char *s, size_t n) {
    size_t i, o = 0;
    unsigned acc = 0;
    int bits = 0;
    while (n && s[n - 1] == '=') n--;
    for (i = 0; i < n; i++) {
        int v = tn__b64_val((unsigned char)s[i]);
        if (v < 0) return -1;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            dst[o++] = (char)((acc >> bits) & 0xff);
        }
    }
    if (bits >= 6) return -1; /* a lone sextet is no byte */
    return (long)o;
}

int tn_http_basic_auth(tn_http_request *r, const char **user, const char **pass) {
    const char *h = tn_http_get_header(r, "Authorization"), *colon;
    size_t n;
    long dl;
    char *d;
    if (!h || strncasecmp(h, "Basic ", 6) != 0) return TN_ENOENT;
    h += 6;
    while (*h == ' ') h++;
    n = strlen(h);
    if (!(d = (char *)tn__req_alloc(r, n + 1))) return TN_ENOMEM;
    if ((dl = tn__b64_decode(d, h, n)) < 0) return TN_EMALFORMED;
    d[dl] = 0;
    if (!(colon = (const char *)memchr(d, ':', (size_t)dl)) || memchr(d, 0, (size_t)dl)) return TN_EMALFORMED;
    d[colon - d] = 0;
    *user = d;
    *pass = colon + 1;
    return 0;
}

int tn_http_auth_challenge(tn_http_request *r, const char *realm) {
    char v[512];
    size_t o = 0;
    const char *p;
    memcpy(v, "Basic realm=\"", 13);
    o = 13;
    for (p = realm ? realm : "tornado.h"; *p && o + 4 < sizeof v; p++) {
        if (*p == '"' || *p == '\\') v[o++] = '\\';
        v[o++] = *p;
    }
    v[o++] = '"';
    v[o] = 0;
    if (tn_http_set_header(r, "WWW-Authenticate", v)) return TN_EINVAL;
    return tn_http_respond(r, 401, NULL, "401 Unauthorized\n", 17);
}

/* ------------------------------------------------------ answers, errors */
int tn_http_set_status(tn_http_request *r, int status) {
    if (r->headers_sent) return TN_ESTATE;
    if (status < 200 || status > 599) return TN_EINVAL;
    r->status_set = status;
    return 0;
}

int tn_http_redirect(tn_http_request *r, const char *url, int status) {
    int rc;
    if (!status) status = 302;
    if (status < 300 || status > 308 || status == 304 || status == 305 || status == 306) return TN_EINVAL;
    if ((rc = tn_http_set_header(r, "Location", url ? url : "")) != 0) return rc;
    return tn_http_respond(r, status, NULL, "", 0);
}

/* Every error answer a request gets from the server (no route, 405, 501,
 * a failed handler's 500, 413 and the other refusals of a parsed head) and
 * from tn_http_send_error goes through here: the server's error hook may
 * write it (Tornado's write_error); else a short text body. */
static int tn__req_error(tn_http_request *r, int status) {
    tn_http_server *srv = r->srv;
    if (r->headers_sent) return TN_ESTATE;
    if (srv->opts.on_error && !r->in_error_hook) {
        r->in_error_hook = 1;
        srv->opts.on_error(r, status, srv->opts.on_error_arg);
        r->in_error_hook = 0;
        if (r->headers_sent) return 0;
    }
    {
        const char *reason = tn_http_reason(status);
        char body[64];
        int n = snprintf(body, sizeof body, "%d %s\n", status, reason);
        return tn_http_respond(r, status, NULL, body, (size_t)n);
    }
}

int tn_http_send_error(tn_http_request *r, int status) {
    if (r->headers_sent) return TN_ESTATE;
    if (status < 400 || status > 599) return TN_EINVAL;
    r->rh_len = 0; /* as Tornado's send_error: the handler's headers go */
    r->has_ctype = r->no_ctype = 0;
    return tn__req_error(r, status);
}

/* --------------------------------------------------- conditional answers
 * Tornado's compute_etag for buffered bodies (a hash of the body) and the
 * If-None-Match / If-Modified-Since checks that turn a 200 into a 304. */

/* The entity-tag tag (with its quotes, "W/" allowed) is in the list of an
 * If-None-Match value, by the weak comparison (RFC 9110 13.1.2): W/"x"
 * matches "x"; "*" matches any. */
static int tn__etag_in_list(const char *list, const char *tag, size_t tl) {
    const char *p = list, *end = list + strlen(list), *el;
    size_t n;
    if (tl > 2 && tag[0] == 'W' && tag[1] == '/') {
        tag += 2;
        tl -= 2;
    }
    while (tn__http_list_next(&p, end, &el, &n)) {
        if (n == 1 && el[0] == '*') return 1;
        if (n > 2 && el[0] == 'W' && el[1] == '/') {
            el += 2;
            n -= 2;
        }
        if (n == tl && memcmp(el, tag, n) == 0) return 1;
    }
    return 0;
}

/* Whether the request may carry If-None-Match or If-Modified-Since: one
 * look at each field's length and first letter, so the usual request,
 * which has neither, skips the lookups by name. */
static int tn__req_maybe_conditional(const tn_http_request *r) {
    size_t i;
    for (i = 0; i < r->msg.num_headers; i++) {
        const tn_http_header *h = &r->msg.headers[i];
        if ((h->name_len == 13 || h->name_len == 17) && (h->name[0] | 0x20) == 'i') return 1;
    }
    return 0;
}

/* Whether the response about to go out (status 200, its headers set) is
 * one the client has: the request's conditionals against the response's
 * ETag (the computed one, r->etag, or the handler's) and Last-Modified. */
static int tn__req_not_modified(tn_http_request *r) {
    const char *inm, *ims;
    size_t end;
    int at;
    if (!tn__req_maybe_conditional(r)) return 0;
    if ((inm = tn_http_get_header(r, "If-None-Match")) != NULL) {
        char buf[20];
        const char *tag = NULL;
        size_t tl = 0;
        if (r->has_etag) { /* its text, only now that a client asks */
            char *p;
            buf[0] = '"';
            p = tn__put_hex16(buf + 1, r->etag);
            *p++ = '"';
            tag = buf;
            tl = (size_t)(p - buf);
        } else if ((at = tn__rh_find(r, "etag", 4, &end)) >= 0) {
            tag = r->rh + at + 6;
            while (*tag == ' ') tag++;
            tl = (size_t)(r->rh + end - 2 - tag);
        }
        return tag && tn__etag_in_list(inm, tag, tl);
    }
    ims = tn_http_get_header(r, "If-Modified-Since");
    if (ims && (at = tn__rh_find(r, "last-modified", 13, &end)) >= 0) {
        char lm[40];
        const char *v = r->rh + at + 14;
        int64_t since = tn__parse_http_date(ims), mod;
        size_t vl;
        while (*v == ' ') v++;
        vl = (size_t)(r->rh + end - 2 - v);
        if (vl >= sizeof lm) return 0;
        memcpy(lm, v, vl);
        lm[vl] = 0;
        mod = tn__parse_http_date(lm);
        return since >= 0 && mod >= 0 && mod <= since;
    }
    return 0;
}

/* For tn_http_respond(_ref): a GET or HEAD 200 gets an ETag of its body
 * (unless the handler set one or the route or server opted out), and the
 * answer becomes a 304 when the client has it. Returns the status to send. */
TN__UNUSED static int tn__req_conditional(tn_http_request *r, int status, const char *body, size_t len) {
    size_t e;
    if (status != 200 || !(r->is_head || (r->msg.method_len == 3 && memcmp(r->msg.method, "GET", 3) == 0)))
        return status;
    if ((!r->rh_len || tn__rh_find(r, "etag", 4, &e) < 0) && !(r->route && r->route->opts.no_etag) &&
        !r->srv->opts.no_etag) {
        r->etag = tn__hash(body, len);
        r->has_etag = 1; /* the head writes it */
    }
    return tn__req_not_modified(r) ? 304 : 200;
}

/* ------------------------------------------------------------ access log */
size_t tn_http_access_combined(const tn_http_access *e, char *buf, size_t cap) {
    char when[40], proto[24] = ""; /* " HTTP/1." and any int */
    struct tm tm;
    time_t t = (time_t)e->time;
    int n, line = e->method && e->method[0]; /* a request line was parsed */
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    gmtime_r(&t, &tm);
    snprintf(when, sizeof when, "%02d/%.3s/%04d:%02d:%02d:%02d +0000", tm.tm_mday, months + 3 * tm.tm_mon,
             tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    /* No request line (method "" or NULL): nginx's "-" stands for it. */
    if (line) snprintf(proto, sizeof proto, " HTTP/1.%d", e->version_minor);
    n = snprintf(buf, cap, "%s - %s [%s] \"%s%s%s%s\" %d %llu \"%s\" \"%s\"", e->peer[0] ? e->peer : "-",
                 e->user ? e->user : "-", when, line ? e->method : "-", line ? " " : "",
                 line && e->target ? e->target : "", proto, e->status, (unsigned long long)e->bytes,
                 e->referer ? e->referer : "-", e->user_agent ? e->user_agent : "-");
    return n < 0 ? 0 : (size_t)n;
}

/* The peer of fd as text: 0, or an error (see tn_http_remote_ip). */
static int tn__peer_ip(int fd, char *buf, size_t cap) {
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char tmp[INET6_ADDRSTRLEN];
    size_t n;
    if (fd < 0) return TN_ECLOSED;
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) != 0) return errno == ENOTCONN ? TN_ECLOSED : -errno;
    if (ss.ss_family == AF_INET) inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, tmp, sizeof tmp);
    else if (ss.ss_family == AF_INET6) inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, tmp, sizeof tmp);
    else return TN_ENOTSUP;
    if ((n = strlen(tmp)) >= cap) return TN_EINVAL;
    memcpy(buf, tmp, n + 1);
    return 0;
}

/* Calls the server's access hook for a request that ends now. */
TN__UNUSED static void tn__req_log(tn_http_request *r) {
    tn_http_server *srv = r->srv;
    tn_http_access e;
    if (!srv->opts.on_access) return;
    memset(&e, 0, sizeof e);
    if (r->head_len) {
        tn__req_terminate(r); /* answered before tn__req_strings ran (a 413, a 503...) */
        e.method = r->msg.method;
        e.target = r->msg.target;
        e.version_minor = r->msg.version_minor;
        e.user_agent = tn_http_get_header(r, "User-Agent");
        e.referer = tn_http_get_header(r, "Referer");
    } else { /* a head that did not parse (400, 414, 431, 505, its 408): logged all the same, as nginx does */
        e.method = e.target = "";
        e.version_minor = 1;
    }
    e.status = r->status;
    e.bytes = r->no_body ? 0 : r->out_len;
    e.duration_us = (tn__clock_ns() - r->start_ns) / 1000u;
    e.time = (int64_t)time(NULL);
    if (tn__peer_ip(r->conn->s.fd, e.peer, sizeof e.peer)) e.peer[0] = 0;
    srv->opts.on_access(&e, srv->opts.on_access_arg);
}

/* ------------------------------------------------------------------ JSON */
size_t tn_json_escape(char *dst, size_t cap, const char *s, size_t len) {
    size_t o = 0, i;
#define TN__J(c) do { if (o + 1 < cap) dst[o] = (c); o++; } while (0)
    TN__J('"');
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            TN__J('\\');
            TN__J((char)c);
        } else if (c < 0x20) {
            static const char hex[] = "0123456789abcdef";
            TN__J('\\');
            switch (c) {
            case '\n': TN__J('n'); break;
            case '\r': TN__J('r'); break;
            case '\t': TN__J('t'); break;
            case '\b': TN__J('b'); break;
            case '\f': TN__J('f'); break;
            default:
                TN__J('u');
                TN__J('0');
                TN__J('0');
                TN__J(hex[c >> 4]);
                TN__J(hex[c & 15]);
            }
        } else {
            TN__J((char)c);
        }
    }
    TN__J('"');
#undef TN__J
    if (cap) dst[o < cap ? o : cap - 1] = 0;
    return o;
}

/* ------------------------------------------------------ connections */
static void tn__server_destroy(tn_http_server *srv);

static void tn__conn_free(tn__conn *c) {
    tn_http_server *srv = c->srv;
    tn__list_del(c);
    if (c->req) tn__req_put(srv, c->req);
    c->req = NULL;
    tn__stream_close(&c->s);
    tn__conn_in_release(c);
    if (c->prev) c->prev->next = c->next;
    else srv->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    srv->nconns--;
    if (c->s.oflags & TN__C_SHED) srv->nshed--;
    tn__free(c);
    if (srv->shutting_down && srv->nconns == 0 && srv->shutdown_f) {
        tn_future *f = srv->shutdown_f;
        srv->shutdown_f = NULL;
        tn_cancel_timer(srv->loop, srv->shutdown_timer);
        tn_future_resolve(f, NULL);
    }
    if (srv->free_pending && srv->nconns == 0) tn__server_destroy(srv);
}

/* Closes the connection. With a coroutine handler still running it only
 * closes the fd and cancels the handler; the rest goes when it ends. */
static void tn__conn_close(tn__conn *c) {
    tn_http_request *r = c->req;
    if (c->s.oflags & TN__C_IN_BATCH) {
        c->s.oflags |= TN__C_CLOSE_NOW;
        return;
    }
    tn__stream_close(&c->s);
    if (r && r->state == TN__RQ_HANDLER && r->co_future) {
        if (c->s.oflags & TN__C_ZOMBIE) return;
        c->s.oflags |= TN__C_ZOMBIE;
        r->closed = 1;
        tn__list_del(c);
        tn__req_settle_drain(r, TN_ECLOSED);
        /* A coroutine's future completes only once the coroutine has ended
         * (cancelling asks it to stop: what it awaits fails with
         * TN_ECANCELLED), so the request it holds stays valid until then;
         * tn__req_co_done then frees the connection. A done future means
         * it has ended: tn__req_co_done is already on its way. */
        if (!tn_future_done(r->co_future)) tn_future_cancel(r->co_future);
        return;
    }
    tn__conn_free(c);
}

/* The last answer is out and the connection is to close. When an error
 * cut a request short, or the client pipelined more, it may still be
 * sending: closing now makes the kernel answer those bytes with a reset,
 * which can destroy the answer before the client has read it. So, as
 * nginx's lingering close: send our FIN, read and drop what comes, and
 * close at the client's EOF or after linger_timeout_ms. */
static void tn__conn_linger(tn__conn *c) {
    if (c->s.oflags & (TN__C_LINGER | TN__C_IN_BATCH)) return; /* in a batch: after it */
#if TN__TLS
    if (c->s.io && c->s.io->tls && !(c->s.flags & TN__S_HANDSHAKE)) tn__tls_notify(c->s.io->tls);
#endif
    if ((c->s.flags & TN__S_EOF) || (!(c->s.oflags & TN__C_CUT) && !tn__stream_avail(&c->s)) ||
        shutdown(c->s.fd, SHUT_WR) != 0) {
        tn__conn_close(c);
        return;
    }
    c->s.oflags |= TN__C_LINGER;
    tn__conn_in_release(c);
    tn__list_add(c, TN__L_LINGER);
    tn__stream_set_reading(&c->s, 1);
}

static int tn__conn_after_batch(tn__conn *c);

/* Processes what is buffered, then flushes once: every path into the
 * connection's logic goes through here. A batch held back by output
 * backpressure runs again when that flush wrote everything: with no output
 * left there is no write event to resume it, and a client waiting for these
 * answers sends nothing that would (a stalled connection). */
static void tn__conn_run(tn__conn *c) {
    do {
        c->s.oflags = (uint16_t)((c->s.oflags | TN__C_IN_BATCH) & ~TN__C_HELD);
        tn__conn_process(c);
        c->s.oflags &= (uint16_t)~TN__C_IN_BATCH;
    } while (tn__conn_after_batch(c));
}

/* Returns 1 when the batch should run again (c is then alive). */
static int tn__conn_after_batch(tn__conn *c) {
    tn_http_request *r = c->req;
    int in_handler = r && r->state == TN__RQ_HANDLER;
    int reading;
    if (c->s.oflags & TN__C_CLOSE_NOW) {
        tn__conn_close(c);
        return 0;
    }
    if (c->s.oflags & TN__C_ZOMBIE) return 0;
    if (tn__conn_flush(c)) return 0; /* closed, maybe freed */
    tn__conn_account(c);
    /* The client's EOF: with no request under way, or between requests,
     * there is nothing more to answer. A request it sent whole is still
     * answered (a client may half-close after sending: nothing says it has
     * gone away, and if it has, the answer's write tells). */
    if (c->s.flags & TN__S_EOF) {
        if (in_handler && r->route && r->route->opts.cancel_on_close) { /* Tornado's on_connection_close */
            tn__conn_close(c);
            return 0;
        }
        /* Not while a handler holds the request or output holds the batch:
         * whole requests may be buffered behind it, and they are answered. */
        if (!in_handler && !(c->s.oflags & TN__C_HELD)) c->s.oflags |= TN__C_CLOSE_AFTER;
    }
    /* Shutting down: a connection between requests closes. */
    if (c->srv->shutting_down && !r && (c->s.oflags & TN__C_SERVED)) c->s.oflags |= TN__C_CLOSE_AFTER;
    if ((c->s.oflags & TN__C_CLOSE_AFTER) && !in_handler) {
        if (!tn__stream_pending(&c->s)) tn__conn_linger(c);
        else if (!(c->s.oflags & TN__C_LINGER)) tn__stream_set_reading(&c->s, 0);
        return 0;
    }
    /* Read on unless the request now belongs to its handler and the buffer
     * is full (it must not move under the request), or output backs up. */
    reading = !(c->s.oflags & TN__C_CLOSE_AFTER) && tn__stream_pending(&c->s) <= TN_HTTP_WRITE_HIGH &&
              (!in_handler || (c->s.io && c->s.io->in.len < c->s.io->in.cap));
    tn__stream_set_reading(&c->s, reading);
    if (!r) {
        if (!tn__stream_avail(&c->s)) tn__conn_in_release(c); /* idle: no buffer */
        /* The idle clock starts once the last response is all out (the
         * drain runs this again then): armed while a big response was
         * still being read, it cut that response at idle_timeout_ms. */
        if (!TN__C_LIST(c) && !tn__stream_pending(&c->s))
            tn__list_add(c, (c->s.oflags & TN__C_SERVED) ? TN__L_IDLE : TN__L_HEADER);
    }
    return (c->s.oflags & TN__C_HELD) && reading && !tn__stream_pending(&c->s);
}

static void tn__conn_on_read(tn_stream *s) {
    tn__conn *c = (tn__conn *)s;
    if (c->s.oflags & TN__C_LINGER) { /* drop it; the client's EOF ends it */
        tn__conn_in_release(c);
        if (s->flags & TN__S_EOF) tn__conn_close(c);
        else tn__stream_set_reading(s, 1);
        return;
    }
    tn__conn_account(c);
    tn__conn_run(c);
}

static void tn__conn_on_drain(tn_stream *s) {
    tn__conn *c = (tn__conn *)s;
    if (c->req) tn__req_settle_drain(c->req, 0);
    if (!tn__stream_pending(s)) tn__conn_run(c); /* resume pipelined requests held back */
}

static void tn__conn_on_error(tn_stream *s, int err) {
    tn__conn *c = (tn__conn *)s;
    (void)err;
    tn__conn_close(c);
}

static const tn__stream_ops tn__conn_ops = {
    tn__conn_on_read, tn__conn_on_drain, tn__conn_on_error, tn__conn_in_limit, TN_HTTP_WRITE_LOW - 1, NULL,
    "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 49\r\nConnection: close\r\n\r\n"
    "The plain HTTP request was sent to an HTTPS port\n"};

/* The request is answered: drop its bytes and get ready for the next. */
static void tn__conn_end_request(tn__conn *c) {
    tn_http_request *r = c->req;
    tn__buf *in = c->s.io ? &c->s.io->in : NULL;
    size_t used = r->head_len + r->body_raw;
    if (in && in->data) {
        char *end = in->data + in->off + used;
        if (r->nul_state == TN__NUL_SAVED) *end = r->nul_saved;
        else if (r->nul_state == TN__NUL_EXTRA) used++;
        in->off += used <= in->len - in->off ? used : in->len - in->off;
        if (in->off == in->len) in->off = in->len = 0;
    }
    tn__req_settle_drain(r, 0);
#if !TN__MINIMAL
    tn__req_log(r);
#endif
    c->req = NULL;
    tn__list_del(c); /* a body's deadline, if the handler ran before the body was in */
    c->s.oflags = (uint16_t)((c->s.oflags & ~TN__C_GOT_BYTES) | TN__C_SERVED);
    tn__req_put(c->srv, r);
}

static void tn__req_co_done(tn_future *f, void *arg) {
    tn_http_request *r = (tn_http_request *)arg;
    tn__conn *c = r->conn;
    int err = tn_future_error(f);
    tn_future_release(f);
    r->co_future = NULL;
    r->frame = NULL; /* freed by the runtime with the coroutine */
    if (c->s.oflags & TN__C_ZOMBIE) {
        tn__conn_free(c);
        return;
    }
    /* Answer as inside a batch (queue, do not flush): a write failing here
     * closed and freed the connection, and end_request then used it. The
     * flush in tn__conn_run finds the failure where it is safe. */
    c->s.oflags |= TN__C_IN_BATCH;
    if (!r->headers_sent) {
        (void)err; /* a failed or silent handler is a server error */
        tn__req_answer_or_close(c, r, 500);
    } else if (!r->finished) {
        if (err) {
            /* A cut-off body must not look whole: close, and without the
             * last chunk, which tn_http_finish would write. */
            c->s.oflags |= TN__C_CLOSE_AFTER;
            r->finished = 1;
        } else {
            tn_http_finish(r);
        }
    }
    c->s.oflags &= (uint16_t)~TN__C_IN_BATCH;
    tn__conn_end_request(c);
    tn__conn_run(c);
}

/* NUL-terminates the head's strings in place: each is followed by a
 * delimiter byte no longer needed. Idempotent; safe once the head parsed. */
static void tn__req_terminate(tn_http_request *r) {
    tn_http_message *m = &r->msg;
    size_t i;
    ((char *)m->method)[m->method_len] = 0;
    ((char *)m->target)[m->target_len] = 0;
    for (i = 0; i < m->num_headers; i++) {
        ((char *)m->headers[i].name)[m->headers[i].name_len] = 0;
        ((char *)m->headers[i].value)[m->headers[i].value_len] = 0;
    }
}

/* The head's strings terminated, the path decoded (400 for a NUL). */
static int tn__req_strings(tn_http_request *r) {
    tn_http_message *m = &r->msg;
    size_t i, need, pl = 0;
    int pct;
    const char *t = "";
    char *path;
    need = 3 * m->target_len + 64;
    if (r->scratch_cap < need) {
        char *ns = (char *)tn__realloc(r->srv->loop, r->scratch, need);
        if (!ns) return 503;
        r->scratch = ns;
        r->scratch_cap = need;
    }
    r->scratch_len = 0;
    tn__req_terminate(r); /* first: an error answer's access log reads them */
    pct = r->target_pct;
    if (pct) {
        const char *tg = m->target;
        for (i = 0; i + 2 < m->target_len; i++)
            if (tg[i] == '%' && tg[i + 1] == '0' && tg[i + 2] == '0') return 400; /* NUL: would truncate */
    }
    if (tn__req_raw_path(r, &t, &pl)) {
        t = "";
        pl = 0;
    }
    if (!pct && t + pl == m->target + m->target_len) {
        r->path = t; /* nothing to decode and no query: the target, terminated above */
    } else {
        path = tn__scratch(r, pl + 1);
        tn__pct_decode(path, t, pl, 0);
        r->path = path;
    }
    for (i = 0; i < r->nparams; i++) {
        char *v = tn__scratch(r, r->params[i].raw_len + 1);
        tn__pct_decode(v, r->params[i].raw, r->params[i].raw_len, 0);
        r->params[i].value = v;
    }
    r->is_head = m->method_len == 4 && memcmp(m->method, "HEAD", 4) == 0;
    return 0;
}

/* The strings, then the coroutine frame of a coroutine route. */
static int tn__req_prepare(tn_http_request *r) {
    int rc = tn__req_strings(r);
    if (rc) return rc;
    if (r->route->co_fn) {
        /* The frame exists from here on, so a streamed body's on_body can
         * keep its state in it; the coroutine starts at dispatch. */
        const tn__route *rt = r->route;
        size_t size = rt->opts.frame_size > sizeof(tn_http_co) ? rt->opts.frame_size : sizeof(tn_http_co);
        tn_http_co *frame = (tn_http_co *)tn_co_new(r->srv->loop, size);
        if (!frame) return 503;
        frame->req = r;
        frame->arg = rt->arg;
        r->frame = &frame->co;
    }
    return 0;
}

/* A buffered body is NUL-terminated for the handler (tn_http_body), over
 * the byte after it (put back when the request ends) or over one more
 * byte. Returns 0 or 503 (no room for that byte). */
static int tn__req_nul_body(tn__conn *c, tn_http_request *r) {
    tn__buf *in;
    char *end;
    if (!r->body_len || r->route->opts.on_body) return 0;
    in = &c->s.io->in;
    end = in->data + in->off + r->head_len + r->body_len;
    if (end < in->data + in->len) {
        r->nul_saved = *end;
        r->nul_state = TN__NUL_SAVED;
    } else {
        if (in->len == in->cap) return 503; /* the body's room had this byte: cannot happen */
        in->len++;
        r->nul_state = TN__NUL_EXTRA;
    }
    *end = 0;
    return 0;
}

/* Runs the route's handler: a plain one to its end (the request ends
 * here), a coroutine up to its first await. */
static void tn__req_run_handler(tn__conn *c, tn_http_request *r) {
    const tn__route *rt = r->route;
    if (rt->fn) {
        rt->fn(r, rt->arg);
        if (!r->headers_sent) tn__req_answer_or_close(c, r, 500);
        else if (!r->finished) tn_http_finish(r);
        tn__conn_end_request(c);
        return;
    }
    {
        /* tn_spawn owns the frame from here, and frees it even if it fails */
        tn_future *f = tn_spawn(c->srv->loop, r->frame, rt->co_fn);
        if (!f) {
            r->frame = NULL;
            tn__req_answer_or_close(c, r, 503);
            tn__conn_end_request(c);
            return;
        }
        r->co_future = f;
        tn_future_on_done(f, tn__req_co_done, r);
    }
}

/* ------------------------------------------------------ response cache
 * A cached route: the lookup is a future the request waits on (as a
 * coroutine handler's: a client that goes meanwhile makes the connection
 * a zombie until it ends). A stored answer is one blob:
 * "TNC1 <expiry, unix ms> <status>\n" then its header lines, an empty line,
 * the body. */
static int tn__req_cache_key(tn_http_request *r) {
    const char *vary = r->route->opts.cache_vary, *p;
    size_t n = 8 + r->msg.target_len + 1, o;
    char *k;
    for (p = vary; p && *p;) { /* room for each named header */
        const char *e = p + strcspn(p, ","), *v;
        char name[64];
        size_t nl;
        while (*p == ' ') p++;
        nl = (size_t)(e - p);
        while (nl && p[nl - 1] == ' ') nl--;
        if (nl && nl < sizeof name) {
            memcpy(name, p, nl);
            name[nl] = 0;
            v = tn_http_get_header(r, name);
            n += nl + 2 + (v ? strlen(v) : 0) + 1;
        }
        p = *e ? e + 1 : e;
    }
    if (!(k = (char *)tn__req_alloc(r, n))) return TN_ENOMEM;
    memcpy(k, "tn:http ", 8);
    memcpy(k + 8, r->msg.target, r->msg.target_len);
    o = 8 + r->msg.target_len;
    for (p = vary; p && *p;) {
        const char *e = p + strcspn(p, ","), *v;
        char name[64];
        size_t nl;
        while (*p == ' ') p++;
        nl = (size_t)(e - p);
        while (nl && p[nl - 1] == ' ') nl--;
        if (nl && nl < sizeof name) {
            memcpy(name, p, nl);
            name[nl] = 0;
            v = tn_http_get_header(r, name);
            o += (size_t)sprintf(k + o, "\n%s: %s", name, v ? v : "");
        }
        p = *e ? e + 1 : e;
    }
    k[o] = 0;
    r->cache_key = k;
    return 0;
}

static uint64_t tn__unix_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The Cache-Control max-age the answer gets, unless the handler set one. */
static void tn__req_cache_max_age(tn_http_request *r, uint64_t left_ms) {
    char cc[40];
    size_t e;
    if (tn__rh_find(r, "cache-control", 13, &e) >= 0) return;
    snprintf(cc, sizeof cc, "max-age=%llu", (unsigned long long)(left_ms / 1000u));
    tn_http_set_header(r, "Cache-Control", cc);
}

/* Answers r from a stored blob; 0, or -1 if the blob is not one (then r's
 * headers are as they were: none). */
static int tn__req_cache_answer(tn_http_request *r, tn_bytes *b) {
    char *p = b->data, *end = b->data + b->len;
    unsigned long long expires = 0;
    uint64_t now = tn__unix_ms();
    int status = 0, n = 0;
    /* (no "\n" in the format: scanf's whitespace would eat the empty line) */
    if (sscanf(p, "TNC1 %llu %d%n", &expires, &status, &n) < 2 || !n || p[n] != '\n' || status < 200 || status > 599)
        return -1;
    for (p += n + 1;;) { /* the header lines, to the empty one */
        char *nl = (char *)memchr(p, '\n', (size_t)(end - p)), *colon, *v;
        if (!nl || nl == p || nl[-1] != '\r') goto bad;
        if (nl == p + 1) {
            p = nl + 1;
            break;
        }
        nl[-1] = 0;
        if (!(colon = (char *)memchr(p, ':', (size_t)(nl - 1 - p)))) goto bad;
        *colon = 0;
        for (v = colon + 1; *v == ' '; v++) {}
        if (tn_http_add_header(r, p, v)) goto bad;
        p = nl + 1;
    }
    tn__req_cache_max_age(r, expires > now ? expires - now : 0);
    tn_http_respond_ref(r, status, NULL, p, (size_t)(end - p), tn_bytes_free, b);
    return 0;
bad:
    r->rh_len = 0;
    r->has_ctype = 0;
    return -1;
}

static void tn__req_cache_looked_up(tn_future *f, void *arg) {
    tn_http_request *r = (tn_http_request *)arg;
    tn__conn *c = r->conn;
    tn_bytes *b = tn_future_error(f) ? NULL : (tn_bytes *)tn_future_take(f);
    tn_future_release(f);
    r->co_future = NULL;
    if (c->s.oflags & TN__C_ZOMBIE) {
        tn_bytes_free(b);
        tn__conn_free(c);
        return;
    }
    c->s.oflags |= TN__C_IN_BATCH; /* as tn__req_co_done: queue now, flush in tn__conn_run */
    if (b && tn__req_cache_answer(r, b) == 0) {
        c->s.oflags &= (uint16_t)~TN__C_IN_BATCH;
        tn__conn_end_request(c);
        tn__conn_run(c);
        return;
    }
    tn_bytes_free(b);
    /* A miss (or a lookup that failed): the handler makes the answer, and
     * a GET's is stored (tn__req_cache_store). */
    if (r->is_head) r->cache_key = NULL;
    c->s.oflags &= (uint16_t)~TN__C_IN_BATCH;
    if (r->route->fn) {
        c->s.oflags |= TN__C_IN_BATCH;
        tn__req_run_handler(c, r);
        c->s.oflags &= (uint16_t)~TN__C_IN_BATCH;
        tn__conn_run(c);
    } else {
        tn__req_run_handler(c, r);
        if (!r->co_future) tn__conn_run(c); /* ended already (no frame) */
    }
}

/* 0: the request waits for its lookup; else the handler runs now. (See
 * tn__cache_route_lookup: req is a tn_http_request.) */
TN__UNUSED static int tn__req_cache_lookup(void *req) {
    tn_http_request *r = (tn_http_request *)req;
    tn_future *f;
    if (tn__req_cache_key(r) || !(f = tn_cache_get(r->route->opts.cache, r->cache_key))) {
        r->cache_key = NULL;
        return -1;
    }
    r->co_future = f;
    tn_future_on_done(f, tn__req_cache_looked_up, r);
    return 0;
}

/* A cached route's answer, as it goes out (tn_http_respond): kept, if it
 * may be. */
TN__UNUSED static void tn__req_cache_store(void *req, int status, const char *ctype, const char *body, size_t len) {
    tn_http_request *r = (tn_http_request *)req;
    const tn_http_route_opts *o = &r->route->opts;
    uint64_t ttl = o->cache_ttl_ms ? o->cache_ttl_ms : 60000;
    size_t e, cl = ctype ? strlen(ctype) : 0, hl;
    const char *key = r->cache_key;
    char *blob;
    int n;
    int at;
    if (!r->cache_key) return;
    r->cache_key = NULL;
    if (!o->cache_any_status && (status < 200 || status > 299)) return;
    if (tn__rh_find(r, "set-cookie", 10, &e) >= 0) return; /* never one client's cookie for all */
    if ((at = tn__rh_find(r, "cache-control", 13, &e)) >= 0) { /* the handler's word */
        char v[256];
        size_t vl = e - (size_t)at;
        if (vl >= sizeof v) vl = sizeof v - 1;
        memcpy(v, r->rh + at, vl);
        v[vl] = 0;
        if (strstr(v, "no-store") || strstr(v, "private") || strstr(v, "no-cache")) return;
    }
    hl = 48 + (cl ? 16 + cl : 0) + r->rh_len;
    if (!(blob = (char *)tn__malloc(r->srv->loop, hl + len))) return;
    n = sprintf(blob, "TNC1 %llu %d\n", (unsigned long long)(tn__unix_ms() + ttl), status);
    if (cl) n += sprintf(blob + n, "Content-Type: %s\r\n", ctype);
    if (r->rh_len) memcpy(blob + n, r->rh, r->rh_len);
    n += (int)r->rh_len;
    memcpy(blob + n, "\r\n", 2);
    n += 2;
    if (len) memcpy(blob + n, body, len);
    tn_future_release(tn_cache_set(o->cache, key, blob, (size_t)n + len, ttl));
    tn__free(blob);
    tn__req_cache_max_age(r, ttl);
}

static void tn__req_dispatch(tn__conn *c, tn_http_request *r) {
#if !TN__MINIMAL
    const tn__route *rt = r->route;
#endif
    r->state = TN__RQ_HANDLER;
    tn__list_del(c); /* the body is in */
    if (tn__req_nul_body(c, r)) {
        tn__conn_error(c, 503);
        return;
    }
#if !TN__MINIMAL
    {
        /* Arguments: a query with too many pairs, or a form body that does
         * not parse, never reaches the handler. */
        size_t q = r->path_end;
        int st = q < r->msg.target_len && tn__form_pairs(r->msg.target + q, r->msg.target_len - q) > TN_HTTP_MAX_ARGS ? 414 : 0;
        if (!st) st = tn__req_body_args(r);
        if (st) {
            r->state = TN__RQ_BODY; /* not the handler's: conn_error gives it back */
            tn__conn_error(c, st);
            return;
        }
    }
    if (rt->opts.cache && (r->is_head || (r->msg.method_len == 3 && memcmp(r->msg.method, "GET", 3) == 0)) &&
        tn__cache_route_lookup(rt->opts.cache, r) == 0)
        return; /* answered when the lookup ends */
#endif
    tn__req_run_handler(c, r);
}

/* Head complete: route it, check the framing against the limits, and set
 * up the body. Returns 0 or the status to answer (then the connection
 * closes: the body, if any, was not read). */
static int tn__req_start(tn__conn *c, tn_http_request *r) {
    tn_http_server *srv = c->srv;
    const tn__route *rt;
    int status = tn__req_route(r);
    uint64_t max;
    if (status) return status;
    rt = r->route;
    max = rt->opts.max_body_bytes ? rt->opts.max_body_bytes : srv->opts.max_body_bytes;
    /* A buffered body must also fit, with the head and a NUL, in a size_t
     * (on ILP32 a limit near SIZE_MAX would wrap the reservation below). */
    if (r->msg.content_length > 0 && !rt->opts.on_body &&
        ((uint64_t)r->msg.content_length > max ||
         (uint64_t)r->msg.content_length > (uint64_t)(SIZE_MAX - r->head_len - 1)))
        return 413;
#if TN__MINIMAL
    if (r->msg.chunked) return 501; /* no chunked request bodies (then the connection closes) */
#endif
    tn__body_start(&r->body, &r->msg, rt->opts.on_body ? 0 : max);
    if (r->body.kind == TN__B_NONE) return 0;
    r->state = TN__RQ_BODY;
    if (r->body.kind == TN__B_LENGTH && !rt->opts.on_body) {
        /* Room for the whole body (and its NUL) now, from the budget; the
         * head is re-parsed at dispatch if this moved the buffer. */
        tn__buf *in = &c->s.io->in;
        size_t have = in->len - in->off, need = r->head_len + (size_t)r->msg.content_length + 1;
        if (need > have) {
            size_t cap = in->cap - in->off < need ? need : in->cap;
            if (!tn__conn_budget_allows(c, cap)) return 503;
            if (tn__buf_reserve_max(srv->loop, in, need - have, need)) return 503;
            tn__conn_account(c);
        }
    }
#if !TN__MINIMAL
    /* Tell a client waiting for it that we will read the body; never to
     * HTTP/1.0 (the parser drops the expectation there). */
    if (r->msg.expect_continue) {
        tn__stream_queue(&c->s, "HTTP/1.1 100 Continue\r\n\r\n", 25);
        tn__stream_flush(&c->s);
        if (c->s.flags & TN__S_CLOSED) return -1;
    }
#endif
    tn__list_add(c, TN__L_BODY);
    return 0;
}

/* The read buffer moved (it grew while a body came in): point the parsed
 * head at its new place. Offsets go through uintptr_t, never comparing
 * pointers into two different objects. */
static void tn__req_rebase(tn_http_request *r, const char *nb) {
    uintptr_t ob = (uintptr_t)r->base;
    size_t i;
#define TN__REBASE(p) ((p) = (p) ? (const char *)(uintptr_t)((uintptr_t)(p) - ob + (uintptr_t)nb) : (p))
    TN__REBASE(r->msg.method);
    TN__REBASE(r->msg.target);
    TN__REBASE(r->msg.host);
    for (i = 0; i < r->msg.num_headers; i++) {
        TN__REBASE(r->msg.headers[i].name);
        TN__REBASE(r->msg.headers[i].value);
    }
    for (i = 0; i < r->nparams; i++) TN__REBASE(r->params[i].raw);
    /* the path, when tn__req_strings left it in the target */
    if (r->path && (uintptr_t)r->path - ob < r->head_len) TN__REBASE(r->path);
#undef TN__REBASE
    r->base = nb;
}

/* A route's answer that keeps the connection (404, 405): the request's body,
 * if any, was not read, so then it closes after all. */
static void tn__req_answer_here(tn__conn *c, tn_http_request *r, int status) {
    int rc;
    r->state = TN__RQ_HANDLER;
    if (r->msg.chunked || r->msg.content_length > 0) c->s.oflags |= TN__C_CLOSE_AFTER;
    if ((rc = tn__req_strings(r)) != 0) { /* the hook may read the request */
        r->state = TN__RQ_HEAD;
        tn__conn_error(c, rc);
        return;
    }
    tn__req_answer_or_close(c, r, status);
    tn__conn_end_request(c);
}

/* Reads the body bytes buffered so far. Returns 1 when the body is
 * complete, 0 for more, or -1 when the connection answered an error. */
static int tn__req_read_body(tn__conn *c, tn_http_request *r) {
    tn__buf *in = &c->s.io->in;
    char *body = in->data + in->off + r->head_len, *raw = body + r->body_raw, *data;
    size_t raw_avail = in->len - in->off - r->head_len - r->body_raw, dlen;
    int done, eof = (c->s.flags & TN__S_EOF) != 0;
    int rc = tn__body_feed(&r->body, raw, raw_avail, eof, &c->srv->limits, &data, &dlen, &done);
    if (rc == TN_ECLOSED) { /* cut off: nothing to answer */
        c->s.oflags |= TN__C_CLOSE_AFTER;
        return 0;
    }
    if (rc < 0) {
        tn__conn_error(c, tn_http_error_status(rc));
        return -1;
    }
    if (r->route->opts.on_body) {
        /* Hand the bytes over and drop them, keeping what follows (a
         * pipelined request): the buffer holds one read's worth. */
        int err = dlen ? r->route->opts.on_body(r, data, dlen, r->route->arg) : 0;
        r->body_len += dlen;
        memmove(raw, raw + rc, in->len - (size_t)(raw + rc - in->data));
        in->len -= (size_t)rc;
        if (err) {
            tn__conn_error(c, 400);
            return -1;
        }
    } else if (r->body.kind == TN__B_CHUNKED) {
        /* Keep the decoded bytes only: what follows the consumed framing
         * moves down over it. Left in the buffer, the framing grew it
         * without bound (4 KB of chunk-ext per data byte made a 1 MiB body
         * 4 GiB of buffer). */
        char *next = raw + rc, *end = in->data + in->len;
        memmove(body + r->body_len, data, dlen);
        r->body_len += dlen;
        memmove(body + r->body_len, next, (size_t)(end - next));
        in->len -= (size_t)(next - (body + r->body_len));
        r->body_raw = r->body_len;
    } else {
        r->body_raw += (size_t)rc;
        r->body_len = r->body_raw;
    }
    if (done) return 1;
    if (c->s.flags & TN__S_FULL) { /* no room to read more: the budget is spent */
        tn__conn_error(c, 503);
        return -1;
    }
    return 0;
}

static void tn__conn_process(tn__conn *c) {
    tn_http_server *srv = c->srv;
    for (;;) {
        tn_http_request *r = c->req;
        tn__buf *in;
        size_t avail;
        int rc;
        if (c->s.flags & TN__S_CLOSED) return;
        if (c->s.oflags & (TN__C_CLOSE_AFTER | TN__C_CLOSE_NOW | TN__C_ZOMBIE)) return;
        if (r && r->state == TN__RQ_HANDLER) return; /* its handler has it */
        if (tn__stream_pending(&c->s) > TN_HTTP_WRITE_HIGH) { /* backpressure */
            c->s.oflags |= TN__C_HELD; /* tn__conn_run resumes it if the flush empties the output */
            return;
        }
        avail = tn__stream_avail(&c->s);
        if (!avail && (!r || r->state == TN__RQ_HEAD)) return;
        in = &c->s.io->in;
        if (r && r->base && r->base != in->data + in->off) tn__req_rebase(r, in->data + in->off);
        if (!r) {
            if (!(r = tn__req_get(srv))) {
                tn__conn_error(c, 503);
                return;
            }
            r->conn = c;
            c->req = r;
            c->s.oflags |= TN__C_GOT_BYTES;
        }
        if (r->state == TN__RQ_HEAD) {
            rc = tn_http_parse_request(in->data + in->off, avail, r->prev_len, &r->msg, r->headers,
                                       TN_HTTP_MAX_HEADERS, &srv->limits);
            if (rc == TN_EAGAIN) {
                /* The head's clock starts with its first bytes, which are
                 * these: a head that came whole in one read (the usual
                 * case) never goes on the list at all. */
                if (TN__C_LIST(c) != TN__L_HEADER + 1) tn__list_add(c, TN__L_HEADER);
                r->prev_len = avail;
                if (c->s.flags & TN__S_EOF) c->s.oflags |= TN__C_CLOSE_AFTER; /* cut off: nothing to answer */
                else if (c->s.flags & TN__S_FULL) tn__conn_error(c, 503); /* no budget for a longer head */
                return;
            }
            if (rc < 0) {
                tn__conn_error(c, tn_http_error_status(rc));
                return;
            }
            r->head_len = (size_t)rc;
            tn__req_target_facts(r);
            r->is_head = r->msg.method_len == 4 && memcmp(r->msg.method, "HEAD", 4) == 0;
            r->base = in->data + in->off;
            tn__list_del(c); /* the head is in: its timeout is over */
            rc = tn__req_start(c, r);
            if (rc == 405) {
                char allow[128];
                tn__req_allow(r, allow, sizeof allow);
                if (tn_http_set_header(r, "Allow", allow) == 0) {
                    tn__req_answer_here(c, r, 405);
                    continue;
                }
            }
            if (rc == 404 && !(r->msg.chunked || r->msg.content_length > 0)) {
                tn__req_answer_here(c, r, 404); /* a 404 keeps the connection */
                continue;
            }
            if (rc) {
                if (rc > 0) tn__conn_error(c, rc);
                return;
            }
            in = &c->s.io->in; /* the body's room may have moved it */
            if (in->data + in->off != r->base) tn__req_rebase(r, in->data + in->off);
            rc = tn__req_prepare(r);
            if (rc) {
                tn__conn_error(c, rc);
                return;
            }
        }
        if (r->state == TN__RQ_BODY && (rc = tn__req_read_body(c, r)) != 1) return;
        tn__req_dispatch(c, r);
    }
}

/* ------------------------------------------------------ accept, listen */
/* Adopts a connected socket (accepted, or given to tn_http_serve_fd). A
 * connection over max_connections is answered 503 and closed lingering, so
 * its client reads the answer rather than a reset; past a bound on those
 * too (a flood), it is closed at once. */
static int tn__conn_new(tn_http_server *srv, int fd, tn_tls_ctx *tls) {
    tn__conn *c;
    int one = 1, shed = srv->nconns - srv->nshed >= srv->opts.max_connections || srv->shutting_down;
    if (shed && srv->nshed >= 64 + srv->opts.max_connections / 8) return TN_EFULL;
    if (!(c = (tn__conn *)tn__malloc(srv->loop, sizeof *c))) return TN_ENOMEM;
    memset(c, 0, sizeof *c);
    if (tn__stream_init(&c->s, srv->loop, fd, &tn__conn_ops)) {
        tn__free(c);
        return TN_ENOMEM;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->srv = srv;
    c->next = srv->conns;
    if (srv->conns) srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;
    if (shed && !tls) { /* over TLS a 503 would need a handshake first: just close */
        c->s.oflags |= TN__C_SHED;
        srv->nshed++;
        tn__conn_error(c, 503);
        return 0;
    }
    tn__list_add(c, TN__L_HEADER); /* over TLS the handshake is on this clock too */
#if TN__TLS
    if (tls && (shed || tn__stream_start_tls(&c->s, tls, NULL, NULL))) {
        tn__conn_close(c);
        return 0;
    }
#else
    (void)tls;
#endif
    return 0;
}

static void tn__server_accepted(tn__acceptor *a, int fd) {
    tn_http_server *srv = (tn_http_server *)a->arg;
    int rc = tn__conn_new(srv, fd, srv->lst_tls[a - srv->lst]);
#ifdef TN_NO_MALLOC
    /* The region is spent: a fixed answer needs no memory (one send into
     * an empty socket buffer; if it does not fit, the close says enough). */
    if (rc == TN_ENOMEM) {
        static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                                   "Retry-After: 1\r\nConnection: close\r\n\r\n";
        ssize_t k = send(fd, busy, sizeof busy - 1, TN__NOSIGNAL);
        (void)k;
    }
#endif
    if (rc) close(fd);
}

int tn_http_server_new(tn_loop *l, const tn_http_server_opts *opts, tn_http_server **out) {
    tn_http_server *srv = (tn_http_server *)tn__malloc(l, sizeof *srv);
    tn_http_server_opts *o;
    int i;
    *out = NULL;
    if (!srv) return TN_ENOMEM;
    memset(srv, 0, sizeof *srv);
    srv->loop = l;
    for (i = 0; i < TN__MAX_LISTEN; i++) srv->lst[i].fd = -1;
    o = &srv->opts;
    if (opts) *o = *opts;
    /* Every default in one place (the manual's table lists them). */
    if (!o->max_head_bytes) o->max_head_bytes = TN_HTTP_MAX_HEAD;
    if (!o->max_target_bytes) o->max_target_bytes = TN_HTTP_MAX_TARGET;
    if (!o->max_body_bytes) o->max_body_bytes = TN_HTTP_MAX_BODY;
    if (!o->max_buffered_bytes) o->max_buffered_bytes = TN_HTTP_MAX_BUFFERED;
    if (!o->max_connections) o->max_connections = TN_HTTP_MAX_CONNECTIONS;
    if (!o->header_timeout_ms) o->header_timeout_ms = 10000;
    if (!o->body_timeout_ms) o->body_timeout_ms = 60000;
    if (!o->idle_timeout_ms) o->idle_timeout_ms = 60000;
    if (!o->write_timeout_ms) o->write_timeout_ms = 60000;
    if (!o->linger_timeout_ms) o->linger_timeout_ms = 5000;
    if (!o->backlog) o->backlog = 511;
    if (o->max_head_bytes > TN__HTTP_INT_MAX) o->max_head_bytes = TN__HTTP_INT_MAX;
    srv->lists[TN__L_HEADER].ms = o->header_timeout_ms;
    srv->lists[TN__L_BODY].ms = o->body_timeout_ms;
    srv->lists[TN__L_IDLE].ms = o->idle_timeout_ms;
    srv->lists[TN__L_LINGER].ms = o->linger_timeout_ms;
    srv->limits.max_head = o->max_head_bytes;
    srv->limits.max_target = o->max_target_bytes;
    srv->limits.max_headers = TN_HTTP_MAX_HEADERS;
    *out = srv;
    return 0;
}

static int tn__http_listen(tn_http_server *srv, const char *host, int port, tn_tls_ctx *tls) {
    int fd, rc;
    if (srv->shutting_down) return TN_ESTATE;
    if (srv->nlisten == TN__MAX_LISTEN) return TN_EFULL;
    fd = tn__listen_socket(host, port, srv->opts.backlog, srv->opts.reuseport, &srv->port);
    if (fd < 0) return fd;
    if ((rc = tn__acceptor_open(&srv->lst[srv->nlisten], srv->loop, fd, tn__server_accepted, srv)) != 0) {
        close(fd);
        return rc;
    }
#if TN__TLS
    if (tls) tls->refs++;
#endif
    srv->lst_tls[srv->nlisten++] = tls;
    return 0;
}

int tn_http_listen(tn_http_server *srv, const char *host, int port) { return tn__http_listen(srv, host, port, NULL); }
#if TN__TLS
int tn_http_listen_tls(tn_http_server *srv, const char *host, int port, tn_tls_ctx *ctx) {
    if (!ctx || !ctx->server) return TN_EINVAL;
    return tn__http_listen(srv, host, port, ctx);
}
#endif

int tn_http_serve_fd(tn_http_server *srv, int fd) {
    int rc;
    if (fd < 0) return TN_EINVAL;
    if (srv->shutting_down) return TN_ESTATE;
    if ((rc = tn__set_nonblock_cloexec(fd)) != 0) return rc;
    tn__sock_prepare(fd);
    return tn__conn_new(srv, fd, NULL);
}

int tn_http_server_port(const tn_http_server *srv) { return srv->port; }
tn_loop *tn_http_server_loop(const tn_http_server *srv) { return srv->loop; }
tn_http_server *tn_http_request_server(const tn_http_request *r) { return r->srv; }
size_t tn_http_server_connections(const tn_http_server *srv) { return srv->nconns; }

static int tn__route_add(tn_http_server *srv, const char *method, const char *pattern,
                         tn_http_handler_fn fn, tn_co_fn co_fn, void *arg, const tn_http_route_opts *opts) {
    tn__route *rt;
    const char *p;
    size_t n;
    if (!pattern || pattern[0] != '/' || (!fn && !co_fn)) return TN_EINVAL;
    for (p = pattern; *p; p++) { /* "{name}" segments; "{name*}" only last */
        if (*p != '{') continue;
        if (TN__MINIMAL) return TN_ENOTSUP; /* exact paths only */
        {
            const char *close = strchr(p, '}');
            if (!close || close == p + 1 || p[-1] != '/') return TN_EINVAL;
            if (close[1] && close[1] != '/') return TN_EINVAL;
            if (close[-1] == '*' && close[1]) return TN_EINVAL;
            p = close;
        }
    }
    if (method) {
        for (p = method; *p; p++)
            if (!tn__http_is_tchar((unsigned char)*p)) return TN_EINVAL;
        if (p == method) return TN_EINVAL;
    }
    if (tn__grow(srv->loop, (void **)&srv->routes, &srv->routes_cap, srv->nroutes + 1, sizeof *srv->routes)) return TN_ENOMEM;
    rt = &srv->routes[srv->nroutes];
    memset(rt, 0, sizeof *rt);
    n = strlen(pattern) + 1;
    if (!(rt->pattern = (char *)tn__malloc(srv->loop, n))) return TN_ENOMEM;
    memcpy(rt->pattern, pattern, n);
    rt->pattern_len = n - 1;
    if (method) {
        n = strlen(method) + 1;
        rt->method_len = n - 1;
        if (!(rt->method = (char *)tn__malloc(srv->loop, n))) {
            tn__free(rt->pattern);
            return TN_ENOMEM;
        }
        memcpy(rt->method, method, n);
    }
    rt->fn = fn;
    rt->co_fn = co_fn;
    rt->arg = arg;
    if (opts) rt->opts = *opts;
    if (rt->opts.cache_vary && !(rt->opts.cache_vary = tn__strndup(srv->loop, rt->opts.cache_vary, strlen(rt->opts.cache_vary)))) {
        tn__free(rt->pattern);
        tn__free(rt->method);
        return TN_ENOMEM;
    }
    srv->nroutes++;
    return 0;
}

int tn_http_route(tn_http_server *srv, const char *method, const char *pattern, tn_http_handler_fn fn,
                  void *arg, const tn_http_route_opts *opts) {
    if (!fn) return TN_EINVAL;
    return tn__route_add(srv, method, pattern, fn, NULL, arg, opts);
}

int tn_http_route_co(tn_http_server *srv, const char *method, const char *pattern, tn_co_fn fn, void *arg,
                     const tn_http_route_opts *opts) {
    if (!fn) return TN_EINVAL;
    if (opts && opts->frame_size && opts->frame_size < sizeof(tn_http_co)) return TN_EINVAL;
    return tn__route_add(srv, method, pattern, NULL, fn, arg, opts);
}

/* ----------------------------------------------------------- static files
 * Tornado's StaticFileHandler: a directory served under a prefix, with
 * Content-Type, Last-Modified and ETag, conditional 304s, one byte range
 * (206, 416), and the file sent by reference (sendfile where it exists): a
 * file of any size costs the connection no user-space buffer. */
#ifndef PATH_MAX
#define PATH_MAX 4096
#endif

typedef struct tn__static {
    char *root; /* realpath of the directory, no trailing slash */
    size_t root_len;
    tn_http_static_opts opts;
    char *index;
} tn__static;

static void tn__static_free(void *p) {
    tn__static *st = (tn__static *)p;
    tn__free(st->root);
    tn__free(st->index);
    tn__free(st);
}

static void tn__close_fd(void *p) { close((int)(intptr_t)p); }

int tn_http_write_file(tn_http_request *r, int fd, uint64_t off, uint64_t len) {
    tn__conn *c = r->conn;
    char line[24];
    size_t ll = 0;
    int rc = tn__write_check(r, len, 0);
    if (rc) {
        close(fd);
        if (rc < 0) r->write_failed = 1;
        return rc > 0 ? 0 : rc;
    }
    if (r->chunked_out) ll = tn__chunk_line(line, len);
    rc = tn__stream_queue_ref(&c->s, line, ll, NULL, fd, off, len, "\r\n", ll ? 2 : 0, tn__close_fd, (void *)(intptr_t)fd);
    if (rc) {
        r->write_failed = 1;
        return rc;
    }
    r->out_len += len;
    if (tn__stream_pending(&c->s) >= TN_HTTP_WRITE_LOW) tn__conn_maybe_flush(c);
    return 0;
}

/* The media type of a file name: the user's hook first, then this table. */
static const char *tn__mime_of(const char *name) {
    static const char *const table[] = {
        "html", "text/html; charset=utf-8", "htm", "text/html; charset=utf-8", "css", "text/css; charset=utf-8",
        "js", "text/javascript; charset=utf-8", "mjs", "text/javascript; charset=utf-8",
        "json", "application/json", "txt", "text/plain; charset=utf-8", "md", "text/markdown; charset=utf-8",
        "csv", "text/csv; charset=utf-8", "xml", "application/xml", "svg", "image/svg+xml", "png", "image/png",
        "jpg", "image/jpeg", "jpeg", "image/jpeg", "gif", "image/gif", "webp", "image/webp", "ico", "image/x-icon",
        "avif", "image/avif", "wasm", "application/wasm", "pdf", "application/pdf", "zip", "application/zip",
        "gz", "application/gzip", "tar", "application/x-tar", "mp4", "video/mp4", "webm", "video/webm",
        "mp3", "audio/mpeg", "ogg", "audio/ogg", "wav", "audio/wav", "woff", "font/woff", "woff2", "font/woff2",
        "ttf", "font/ttf", "otf", "font/otf", "map", "application/json",
    };
    const char *dot = strrchr(name, '.'), *slash = strrchr(name, '/');
    size_t i;
    if (!dot || (slash && dot < slash)) return "application/octet-stream";
    for (i = 0; i < sizeof table / sizeof table[0]; i += 2)
        if (tn__http_ieq(dot + 1, strlen(dot + 1), table[i])) return table[i + 1];
    return "application/octet-stream";
}

/* One byte range of a file of size n from a Range value: 1 (and *from,
 * *to inclusive), 0 (not one range we serve: answer the whole file), or -1
 * (unsatisfiable: 416). Several ranges are answered whole, as httpbin and
 * Tornado do. */
static int tn__range_parse(const char *v, uint64_t n, uint64_t *from, uint64_t *to) {
    uint64_t a = 0, b = 0;
    int has_a = 0, has_b = 0;
    if (strncmp(v, "bytes=", 6) != 0) return 0;
    v += 6;
    while (*v == ' ') v++;
    if (strchr(v, ',')) return 0;
    /* A number past 2^64 saturates: it is past any file's end, so a first
     * byte there is unsatisfiable and a last byte there is the end. */
    while (*v >= '0' && *v <= '9') {
        a = a > (UINT64_MAX - 9) / 10 ? UINT64_MAX : a * 10 + (uint64_t)(*v - '0');
        v++;
        has_a = 1;
    }
    if (*v++ != '-') return 0;
    while (*v >= '0' && *v <= '9') {
        b = b > (UINT64_MAX - 9) / 10 ? UINT64_MAX : b * 10 + (uint64_t)(*v - '0');
        v++;
        has_b = 1;
    }
    while (*v == ' ') v++;
    if (*v || (!has_a && !has_b)) return 0;
    if (!has_a) { /* a suffix: the last b bytes */
        if (b == 0 || n == 0) return -1;
        *from = b >= n ? 0 : n - b;
        *to = n - 1;
        return 1;
    }
    if (has_b && b < a) return 0; /* invalid: ignored (RFC 9110 14.2) */
    if (a >= n) return -1;
    *from = a;
    *to = has_b && b < n ? b : n - 1;
    return 1;
}

/* The request's path below the prefix, checked: no "." or ".." segment and
 * no empty one (so no "//"); NUL was refused with the request. The real
 * path must stay inside the root (a symlink out of it is 403). Writes the
 * absolute path to out; returns 0, 403 or 404. */
static int tn__static_resolve(const tn__static *st, const char *rel, char *out, size_t cap) {
    char joined[PATH_MAX];
    const char *p = rel;
    int n;
    while (*p) {
        const char *e = strchr(p, '/');
        size_t sl = e ? (size_t)(e - p) : strlen(p);
        if ((sl == 0 && e) || (sl == 1 && p[0] == '.') || (sl == 2 && p[0] == '.' && p[1] == '.')) return 404;
        p += sl + (e ? 1 : 0);
    }
    n = snprintf(joined, sizeof joined, "%s/%s", st->root, rel);
    if (n < 0 || (size_t)n >= sizeof joined) return 404;
    if (!realpath(joined, out)) return 404;
    (void)cap;
    if (strncmp(out, st->root, st->root_len) != 0 || (out[st->root_len] != '/' && out[st->root_len] != 0)) return 403;
    return 0;
}

static void tn__static_handler(tn_http_request *r, void *arg) {
    tn__static *st = (tn__static *)arg;
    const char *rel = tn_http_param(r, "tn_static_path"), *range, *ifr;
    char path[PATH_MAX], tag[64], date[32];
    struct stat sb;
    uint64_t from = 0, to = 0, n;
    int fd, rc, ranged = 0;
    rc = tn__static_resolve(st, rel ? rel : "", path, sizeof path);
    if (rc) {
        tn__req_error(r, rc);
        return;
    }
    if (stat(path, &sb) != 0) {
        tn__req_error(r, 404);
        return;
    }
    if (S_ISDIR(sb.st_mode)) {
        /* A directory: its index, if it has one (listing is off). Asked
         * for without the final '/', it is first sent there (301, as nginx
         * and Tornado's StaticFileHandler do): the index's relative links
         * resolve against the directory only then. */
        size_t pl = strlen(path), tl;
        const char *t;
        if (!tn__req_raw_path(r, &t, &tl) && tl && t[tl - 1] != '/') {
            const char *q = r->msg.target + r->path_end; /* "?..." or "" */
            size_t ql = r->msg.target_len - r->path_end;
            char *loc = tn__scratch(r, tl + 1 + ql + 1);
            if (!loc) {
                tn__req_error(r, 500);
                return;
            }
            memcpy(loc, t, tl);
            loc[tl] = '/';
            memcpy(loc + tl + 1, q, ql);
            loc[tl + 1 + ql] = 0;
            tn_http_redirect(r, loc, 301);
            return;
        }
        if (pl + 1 + strlen(st->index) >= sizeof path) {
            tn__req_error(r, 404);
            return;
        }
        path[pl] = '/';
        memcpy(path + pl + 1, st->index, strlen(st->index) + 1);
        if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) {
            tn__req_error(r, 403);
            return;
        }
    } else if (!S_ISREG(sb.st_mode)) {
        tn__req_error(r, 403);
        return;
    }
    if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0 || fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        if (fd >= 0) close(fd);
        tn__req_error(r, 404);
        return;
    }
    n = (uint64_t)sb.st_size;
    snprintf(tag, sizeof tag, "\"%llx-%llx\"", (unsigned long long)sb.st_mtime, (unsigned long long)n);
    date[tn__fmt_http_date(date, sb.st_mtime)] = 0;
    tn_http_set_header(r, "ETag", tag);
    tn_http_set_header(r, "Last-Modified", date);
    tn_http_set_header(r, "Accept-Ranges", "bytes");
    if (st->opts.max_age) {
        char cc[40];
        snprintf(cc, sizeof cc, "max-age=%u", st->opts.max_age);
        tn_http_set_header(r, "Cache-Control", cc);
    }
    if (tn__req_not_modified(r)) {
        close(fd);
        tn_http_respond(r, 304, NULL, "", 0);
        return;
    }
    range = tn_http_get_header(r, "Range");
    ifr = tn_http_get_header(r, "If-Range");
    /* If-Range: the range only if the file is still the one it names. */
    if (range && (!ifr || strcmp(ifr, tag) == 0 || strcmp(ifr, date) == 0)) ranged = tn__range_parse(range, n, &from, &to);
    if (ranged < 0) {
        char cr[48];
        close(fd);
        snprintf(cr, sizeof cr, "bytes */%llu", (unsigned long long)n);
        tn_http_set_header(r, "Content-Range", cr);
        tn__req_error(r, 416);
        return;
    }
    {
        const char *type = st->opts.mime ? st->opts.mime(path, st->opts.mime_arg) : NULL;
        uint64_t len = ranged ? to - from + 1 : n;
        if (ranged) {
            char cr[64];
            snprintf(cr, sizeof cr, "bytes %llu-%llu/%llu", (unsigned long long)from, (unsigned long long)to,
                     (unsigned long long)n);
            tn_http_set_header(r, "Content-Range", cr);
        }
        if (tn_http_begin(r, ranged ? 206 : 200, type ? type : tn__mime_of(path), (int64_t)len)) {
            close(fd);
            return;
        }
        if (len) tn_http_write_file(r, fd, from, len); /* the fd is the server's now */
        else close(fd);
        tn_http_finish(r);
    }
}

int tn_http_static(tn_http_server *srv, const char *prefix, const char *root, const tn_http_static_opts *opts) {
    tn__static *st;
    char real[PATH_MAX], *pattern;
    size_t pl;
    int rc;
    if (!prefix || prefix[0] != '/' || !root || !realpath(root, real)) return TN_EINVAL;
    pl = strlen(prefix);
    if (prefix[pl - 1] != '/') return TN_EINVAL;
    if (!(st = (tn__static *)tn__malloc(srv->loop, sizeof *st))) return TN_ENOMEM;
    memset(st, 0, sizeof *st);
    if (opts) st->opts = *opts;
    st->root_len = strlen(real);
    while (st->root_len > 1 && real[st->root_len - 1] == '/') real[--st->root_len] = 0;
    if (st->root_len == 1) st->root_len = 0; /* "/": every path is inside */
    st->root = tn__strndup(srv->loop, real, strlen(real));
    st->index = tn__strndup(srv->loop, st->opts.index ? st->opts.index : "index.html", strlen(st->opts.index ? st->opts.index : "index.html"));
    pattern = (char *)tn__malloc(srv->loop, pl + sizeof "{tn_static_path*}");
    if (!st->root || !st->index || !pattern) {
        tn__free(pattern);
        tn__static_free(st);
        return TN_ENOMEM;
    }
    memcpy(pattern, prefix, pl);
    memcpy(pattern + pl, "{tn_static_path*}", sizeof "{tn_static_path*}");
    rc = tn__route_add(srv, "GET", pattern, tn__static_handler, NULL, st, NULL);
    tn__free(pattern);
    if (rc) {
        tn__static_free(st);
        return rc;
    }
    srv->routes[srv->nroutes - 1].arg_free = tn__static_free;
    return 0;
}

/* ----------------------------------------------------- shutdown, free */
static void tn__server_close_listeners(tn_http_server *srv) {
    int i;
    for (i = 0; i < srv->nlisten; i++) {
        tn__acceptor_close(&srv->lst[i]);
#if TN__TLS
        if (srv->lst_tls[i]) tn__tls_ctx_unref(srv->lst_tls[i]);
#endif
        srv->lst_tls[i] = NULL;
    }
    srv->nlisten = 0;
}

static void tn__server_force_close(tn_loop *l, void *arg) {
    tn_http_server *srv = (tn_http_server *)arg;
    tn__conn *c = srv->conns, *next;
    (void)l;
    for (; c; c = next) {
        next = c->next;
        if (!(c->s.oflags & TN__C_ZOMBIE)) tn__conn_close(c);
    }
}

tn_future *tn_http_server_shutdown(tn_http_server *srv, unsigned deadline_ms) {
    tn_future *f = tn_future_new(srv->loop);
    tn__conn *c, *next;
    int i;
    if (!f) return NULL;
    if (srv->shutting_down) {
        tn_future_fail(f, TN_ESTATE);
        return f;
    }
    /* What the kernel has accepted already is ours to answer: take it in
     * before the listeners close (closing them would reset those clients). */
    for (i = 0; i < srv->nlisten; i++) {
        int fd;
        while ((fd = tn__accept(srv->lst[i].fd)) >= 0 || fd == -EINTR || fd == -ECONNABORTED)
            if (fd >= 0 && tn__conn_new(srv, fd, srv->lst_tls[i])) close(fd);
    }
    srv->shutting_down = 1;
    tn__server_close_listeners(srv);
    if (srv->nconns == 0) {
        tn_future_resolve(f, NULL);
        return f;
    }
    srv->shutdown_f = f;
    /* No timer (out of memory) would mean no deadline: close now instead. */
    if (tn_call_later(srv->loop, deadline_ms, tn__server_force_close, srv, &srv->shutdown_timer)) {
        srv->shutdown_timer = 0;
        tn__server_force_close(srv->loop, srv);
    }
    /* Requests under way (a head or a body still arriving, a handler, a
     * response going out) finish, with "Connection: close"; so does the
     * first request of a connection that has sent nothing yet (accepted
     * just now: its request is on the way). Connections between requests
     * close now. The deadline closes what is left. */
    for (c = srv->conns; c; c = next) {
        next = c->next;
        if (c->req || !(c->s.oflags & TN__C_SERVED) || (c->s.oflags & (TN__C_ZOMBIE | TN__C_LINGER))) continue;
        if (!tn__stream_pending(&c->s)) tn__conn_close(c);
        else c->s.oflags |= TN__C_CLOSE_AFTER;
    }
    return f;
}

static void tn__server_destroy(tn_http_server *srv) {
    size_t i;
    for (i = 0; i < 4; i++)
        if (srv->lists[i].armed) tn_cancel_timer(srv->loop, srv->lists[i].timer);
    while (srv->req_free) {
        tn_http_request *r = srv->req_free;
        srv->req_free = r->next_free;
        tn__free(r->scratch);
        tn__free(r->rh);
        tn__free(r);
    }
    for (i = 0; i < srv->nroutes; i++) {
        tn__free(srv->routes[i].method);
        tn__free(srv->routes[i].pattern);
        if (srv->routes[i].arg_free) srv->routes[i].arg_free(srv->routes[i].arg);
        tn__free((void *)(uintptr_t)srv->routes[i].opts.cache_vary);
    }
    tn__free(srv->routes);
    tn__free(srv);
}

void tn_http_server_free(tn_http_server *srv) {
    tn__conn *c, *next;
    if (!srv) return;
    tn__server_close_listeners(srv);
    srv->shutting_down = 1;
    if (srv->shutdown_f) {
        tn_cancel_timer(srv->loop, srv->shutdown_timer);
        tn_future_fail(srv->shutdown_f, TN_ECANCELLED);
        srv->shutdown_f = NULL;
    }
    for (c = srv->conns; c; c = next) {
        next = c->next;
        c->s.oflags &= (uint16_t)~TN__C_IN_BATCH;
        /* A connection whose coroutine handler still runs becomes a zombie
         * (fd closed, handler cancelled) and goes when the handler ends. */
        if (!(c->s.oflags & TN__C_ZOMBIE)) tn__conn_close(c);
    }
    if (srv->nconns) {
        /* Coroutines are unwinding (on later iterations): the last one to
         * end frees the server. If the loop never runs again they cannot,
         * and their memory stays. */
        srv->free_pending = 1;
        return;
    }
    tn__server_destroy(srv);
}

/* ---------------------------------------------------------- accessors */
const char *tn_http_method(const tn_http_request *r) { return r->msg.method; }
const char *tn_http_target(const tn_http_request *r) { return r->msg.target; }
const char *tn_http_path(const tn_http_request *r) { return r->path; }
int tn_http_version_minor(const tn_http_request *r) { return r->msg.version_minor; }
const char *tn_http_protocol(const tn_http_request *r) {
#if TN__TLS
    if (r->conn->s.io && r->conn->s.io->tls) return "https";
#else
    (void)r;
#endif
    return "http";
}
void *tn_http_frame(tn_http_request *r) { return r->frame; }
int tn_http_closed(const tn_http_request *r) { return r->closed; }

int tn_http_remote_ip(const tn_http_request *r, char *buf, size_t cap) {
    if (!buf || !cap) return TN_EINVAL;
    buf[0] = 0;
    if (r->closed || (r->conn->s.flags & TN__S_CLOSED)) return TN_ECLOSED;
    return tn__peer_ip(r->conn->s.fd, buf, cap);
}

const char *tn_http_param(tn_http_request *r, const char *name) {
    size_t i, n = strlen(name);
    for (i = 0; i < r->nparams; i++)
        if (r->params[i].name_len == n && memcmp(r->params[i].name, name, n) == 0) return r->params[i].value;
    return NULL;
}

const char *tn_http_get_header(const tn_http_request *r, const char *name) {
    const tn_http_header *h = tn_http_find_header(&r->msg, name);
    return h ? h->value : NULL;
}
size_t tn_http_header_count(const tn_http_request *r) { return r->msg.num_headers; }
int tn_http_header_at(const tn_http_request *r, size_t i, const char **name, const char **value) {
    if (i >= r->msg.num_headers) return TN_ENOENT;
    *name = r->msg.headers[i].name;
    *value = r->msg.headers[i].value;
    return 0;
}
const char *tn_http_body(const tn_http_request *r, size_t *len) {
    int buffered = r->base && r->body_len && !(r->route && r->route->opts.on_body);
    if (len) *len = buffered ? r->body_len : 0;
    return buffered ? r->conn->s.io->in.data + r->conn->s.io->in.off + r->head_len : "";
}

#endif /* TN_NO_HTTP_SERVER */

/* ================================================================= CACHE
 * A cache of byte values under string keys: the core (counters, and
 * single-flight: one computation per key however many miss it at once)
 * over a backend (the in-memory one below, or another process's store:
 * examples/redis_cache.h puts it in Redis). */

/* ------------------------------------------------------- memory backend
 * A hash table and an LRU list under a byte budget; an entry's TTL is
 * checked when it is looked up (an expired entry is a miss) and entries go
 * from the LRU end when a new one needs room. */
typedef struct tn__centry tn__centry;
struct tn__centry {
    tn__centry *hnext, *prev, *next; /* bucket chain; LRU (head: the newest) */
    uint64_t hash, expires_ns;       /* expires_ns 0: never */
    size_t klen, vlen;
    /* key, NUL, value follow */
};

typedef struct tn__cmem {
    tn_loop *loop;
    tn__centry **buckets;
    size_t nbuckets, count, bytes, max_bytes;
    tn__centry *lru_head, *lru_tail;
    tn_cache_stats *stats; /* the cache's: evictions, expirations, entries, bytes */
    uint64_t seed;         /* of its hash: see tn__hash_str */
} tn__cmem;

/* Keys are a peer's (a cached route's is its path and query), so the
 * table's hash is seeded per cache: without it, keys that collide in one
 * process collide in every one, and a client that found a set could make
 * each lookup walk one long chain (hash flooding). The seed (the clock and
 * ASLR'd addresses) is not a secret key and this is no SipHash; it makes
 * such a set a per-process guess, and the byte budget bounds the chain. */
static uint64_t tn__hash_str(const tn__cmem *m, const char *s, size_t n) {
    return tn__hash_seeded(s, n, m->seed) | 1u;
}
static const char *tn__centry_key(const tn__centry *e) { return (const char *)(e + 1); }
static size_t tn__centry_size(const tn__centry *e) { return sizeof *e + e->klen + 1 + e->vlen; }

static tn__centry **tn__cmem_slot(tn__cmem *m, const char *key, size_t klen, uint64_t h) {
    tn__centry **pp;
    if (!m->nbuckets) return NULL;
    for (pp = &m->buckets[h & (m->nbuckets - 1)]; *pp; pp = &(*pp)->hnext)
        if ((*pp)->hash == h && (*pp)->klen == klen && memcmp(tn__centry_key(*pp), key, klen) == 0) return pp;
    return pp;
}

static void tn__cmem_unlink(tn__cmem *m, tn__centry *e) {
    tn__centry **pp = &m->buckets[e->hash & (m->nbuckets - 1)];
    while (*pp != e) pp = &(*pp)->hnext;
    *pp = e->hnext;
    if (e->prev) e->prev->next = e->next;
    else m->lru_head = e->next;
    if (e->next) e->next->prev = e->prev;
    else m->lru_tail = e->prev;
    m->count--;
    m->bytes -= tn__centry_size(e);
    m->stats->entries = m->count;
    m->stats->bytes = m->bytes;
    tn__free(e);
}

static int tn__cmem_grow(tn__cmem *m) {
    size_t n = m->nbuckets ? m->nbuckets * 2 : 64, i;
    tn__centry **nb = (tn__centry **)tn__malloc(m->loop, n * sizeof *nb);
    if (!nb) return TN_ENOMEM;
    memset(nb, 0, n * sizeof *nb);
    for (i = 0; i < m->nbuckets; i++) {
        tn__centry *e = m->buckets[i], *next;
        for (; e; e = next) {
            next = e->hnext;
            e->hnext = nb[e->hash & (n - 1)];
            nb[e->hash & (n - 1)] = e;
        }
    }
    tn__free(m->buckets);
    m->buckets = nb;
    m->nbuckets = n;
    return 0;
}

/* The live entry of key, made the newest; an expired one is removed. */
static tn__centry *tn__cmem_find(tn__cmem *m, const char *key) {
    size_t klen = strlen(key);
    tn__centry **pp = tn__cmem_slot(m, key, klen, tn__hash_str(m, key, klen)), *e;
    if (!pp || !(e = *pp)) return NULL;
    if (e->expires_ns && e->expires_ns <= m->loop->now_ns) {
        m->stats->expirations++;
        tn__cmem_unlink(m, e);
        return NULL;
    }
    if (e != m->lru_head) { /* to the front */
        e->prev->next = e->next;
        if (e->next) e->next->prev = e->prev;
        else m->lru_tail = e->prev;
        e->prev = NULL;
        e->next = m->lru_head;
        m->lru_head->prev = e;
        m->lru_head = e;
    }
    return e;
}

static tn_future *tn__cmem_get(void *impl, const char *key) {
    tn__cmem *m = (tn__cmem *)impl;
    tn__centry *e = tn__cmem_find(m, key);
    tn_future *f = tn_future_new(m->loop);
    tn_bytes *b;
    if (!f) return NULL;
    if (!e) {
        tn_future_resolve(f, NULL);
        return f;
    }
    if (!(b = tn_bytes_new_in(m->loop, tn__centry_key(e) + e->klen + 1, e->vlen))) tn_future_fail(f, TN_ENOMEM);
    else tn_future_resolve_owned(f, b, tn_bytes_free);
    return f;
}

static int tn__cmem_put(tn__cmem *m, const char *key, const void *data, size_t len, uint64_t ttl_ms) {
    size_t klen = strlen(key), need = sizeof(tn__centry) + klen + 1 + len;
    uint64_t h = tn__hash_str(m, key, klen);
    tn__centry **pp, *e;
    if (need > m->max_bytes) return TN_ETOOLARGE;
    if ((pp = tn__cmem_slot(m, key, klen, h)) && *pp) tn__cmem_unlink(m, *pp);
    while (m->lru_tail && m->bytes + need > m->max_bytes) { /* room: the least recently used go */
        m->stats->evictions++;
        tn__cmem_unlink(m, m->lru_tail);
    }
    if (m->count >= m->nbuckets && tn__cmem_grow(m)) return TN_ENOMEM;
    if (!(e = (tn__centry *)tn__malloc(m->loop, need))) return TN_ENOMEM;
    e->hash = h;
    e->klen = klen;
    e->vlen = len;
    e->expires_ns = ttl_ms ? m->loop->now_ns + ttl_ms * 1000000u : 0;
    memcpy((char *)(e + 1), key, klen + 1);
    if (len) memcpy((char *)(e + 1) + klen + 1, data, len);
    pp = &m->buckets[h & (m->nbuckets - 1)];
    e->hnext = *pp;
    *pp = e;
    e->prev = NULL;
    e->next = m->lru_head;
    if (m->lru_head) m->lru_head->prev = e;
    else m->lru_tail = e;
    m->lru_head = e;
    m->count++;
    m->bytes += need;
    m->stats->entries = m->count;
    m->stats->bytes = m->bytes;
    return 0;
}

static tn_future *tn__cmem_done(tn__cmem *m, int rc) {
    tn_future *f = tn_future_new(m->loop);
    if (f) {
        if (rc) tn_future_fail(f, rc);
        else tn_future_resolve(f, NULL);
    }
    return f;
}

static tn_future *tn__cmem_set(void *impl, const char *key, const void *data, size_t len, uint64_t ttl_ms) {
    tn__cmem *m = (tn__cmem *)impl;
    return tn__cmem_done(m, tn__cmem_put(m, key, data, len, ttl_ms));
}

static tn_future *tn__cmem_del(void *impl, const char *key) {
    tn__cmem *m = (tn__cmem *)impl;
    size_t klen = strlen(key);
    tn__centry **pp = tn__cmem_slot(m, key, klen, tn__hash_str(m, key, klen));
    if (pp && *pp) tn__cmem_unlink(m, *pp);
    return tn__cmem_done(m, 0);
}

static tn_future *tn__cmem_del_prefix(void *impl, const char *prefix) {
    tn__cmem *m = (tn__cmem *)impl;
    size_t pl = strlen(prefix);
    tn__centry *e = m->lru_head, *next;
    for (; e; e = next) {
        next = e->next;
        if (e->klen >= pl && memcmp(tn__centry_key(e), prefix, pl) == 0) tn__cmem_unlink(m, e);
    }
    return tn__cmem_done(m, 0);
}

static void tn__cmem_free(void *impl) {
    tn__cmem *m = (tn__cmem *)impl;
    while (m->lru_head) tn__cmem_unlink(m, m->lru_head);
    tn__free(m->buckets);
    tn__free(m);
}

static const tn_cache_backend tn__cmem_backend = {tn__cmem_get, tn__cmem_set, tn__cmem_del, tn__cmem_del_prefix,
                                                  tn__cmem_free};

/* ------------------------------------------------------------ cache core */
typedef struct tn__flight tn__flight;

struct tn_cache {
    tn_loop *loop;
    tn_cache_opts opts;
    const tn_cache_backend *be;
    void *impl;
    /* the server's route cache (tn__req_cache_lookup, _store), set by
     * tn_cache_new: only a program that makes a cache links them */
    int (*route_lookup)(void *req);
    void (*route_store)(void *req, int status, const char *ctype, const char *body, size_t len);
    tn__flight *flights; /* keys being looked up or computed */
    tn_cache_stats stats;
};

/* One key in flight: its waiters, what it waits for (a lookup, then maybe
 * the computation), and what to do when that ends. */
struct tn__flight {
    tn__flight *next;
    tn_cache *cache;
    char *key;
    uint64_t ttl_ms;
    tn_cache_fill_fn fill;
    void *fill_arg;
    tn_future *pending; /* the backend get, then the fill */
    int filling;
    int stale; /* the key was set or invalidated meanwhile: deliver, do not store, take no new waiters */
    tn__waitlist waiters;
};

/* hit: the waiters are answered from the store (else by a fill, or not). */
static void tn__flight_end(tn__flight *fl, int err, const tn_bytes *value, int hit) {
    tn_cache *c = fl->cache;
    tn__flight **pp;
    for (pp = &c->flights; *pp != fl; pp = &(*pp)->next) {}
    *pp = fl->next;
    c->stats.waiters -= fl->waiters.n;
    if (hit) c->stats.hits += fl->waiters.n; /* counted per fetch, not per lookup */
    else c->stats.misses += fl->waiters.n;
    while (fl->waiters.n) {
        tn__waiter w = tn__waitlist_pop(&fl->waiters);
        tn_bytes *copy;
        tn_future_on_cancel(w.f, NULL, NULL);
        if (err) tn_future_fail(w.f, err);
        else if (!(copy = tn_bytes_new_in(fl->cache->loop, value->data, value->len))) tn_future_fail(w.f, TN_ENOMEM);
        else tn_future_resolve_owned(w.f, copy, tn_bytes_free);
    }
    tn__free(fl->waiters.w);
    tn__free(fl->key);
    tn__free(fl);
}

static void tn__flight_filled(tn_future *f, void *arg) {
    tn__flight *fl = (tn__flight *)arg;
    tn_cache *c = fl->cache;
    int err = tn_future_error(f);
    tn_bytes *v = err ? NULL : (tn_bytes *)tn_future_take(f);
    tn_future_release(f);
    fl->pending = NULL;
    if (!err && !v) err = TN_EINVAL; /* a fill must give a value */
    if (err) {
        c->stats.fill_errors++; /* not cached: the next miss computes again */
        tn__flight_end(fl, err, NULL, 0);
        return;
    }
    /* A fill the key's invalidation overtook may hold what was there
     * before the write: its waiters get it (they asked before), the store
     * does not. Fire and forget. */
    if (!fl->stale) tn_future_release(c->be->set(c->impl, fl->key, v->data, v->len, fl->ttl_ms));
    tn__flight_end(fl, 0, v, 0);
    tn_bytes_free(v);
}

static void tn__flight_looked_up(tn_future *f, void *arg) {
    tn__flight *fl = (tn__flight *)arg;
    tn_cache *c = fl->cache;
    int err = tn_future_error(f);
    tn_bytes *v = err ? NULL : (tn_bytes *)tn_future_take(f);
    tn_future_release(f);
    fl->pending = NULL;
    if (v) {
        tn__flight_end(fl, 0, v, 1);
        tn_bytes_free(v);
        return;
    }
    /* A miss (a backend error counts as one): compute. The fill starts
     * after any invalidation seen so far, so what it reads is fresh. */
    c->stats.fills++;
    fl->filling = 1;
    fl->stale = 0;
    if (!(fl->pending = fl->fill(fl->key, fl->fill_arg))) {
        c->stats.fill_errors++;
        tn__flight_end(fl, TN_ENOMEM, NULL, 0);
        return;
    }
    tn_future_on_done(fl->pending, tn__flight_filled, fl);
}

static void tn__flight_wait_cancelled(tn_future *f, void *arg) {
    tn__flight *fl = (tn__flight *)arg;
    tn__waitlist_remove(&fl->waiters, f);
    fl->cache->stats.waiters--;
    tn_future_fail(f, TN_ECANCELLED); /* the computation goes on: its result is cached */
}

tn_future *tn_cache_fetch(tn_cache *c, const char *key, uint64_t ttl_ms, tn_cache_fill_fn fill, void *arg) {
    tn__flight *fl;
    tn_future *f;
    if (!key || !fill) {
        if ((f = tn_future_new(c->loop)) != NULL) tn_future_fail(f, TN_EINVAL);
        return f;
    }
    for (fl = c->flights; fl; fl = fl->next)
        if (!fl->stale && strcmp(fl->key, key) == 0) break; /* a stale one takes no one new */
    if (!fl) {
        if (!(fl = (tn__flight *)tn__malloc(c->loop, sizeof *fl))) return NULL;
        memset(fl, 0, sizeof *fl);
        if (!(fl->key = tn__strndup(c->loop, key, strlen(key)))) {
            tn__free(fl);
            return NULL;
        }
        fl->cache = c;
        fl->ttl_ms = ttl_ms ? ttl_ms : c->opts.ttl_ms;
        fl->fill = fill;
        fl->fill_arg = arg;
        fl->next = c->flights;
        c->flights = fl;
    }
    f = tn__waitlist_wait(c->loop, &fl->waiters, NULL, tn__flight_wait_cancelled, fl);
    if (!f) {
        if (!fl->waiters.n && !fl->pending) tn__flight_end(fl, TN_ENOMEM, NULL, 0);
        return NULL;
    }
    c->stats.waiters++;
    if (!fl->pending && !fl->filling) {
        if (!(fl->pending = c->be->get(c->impl, key))) {
            tn__flight_end(fl, TN_ENOMEM, NULL, 0); /* fails f too */
            return f;
        }
        tn_future_on_done(fl->pending, tn__flight_looked_up, fl);
    }
    return f;
}

/* A plain lookup: counted as a hit or a miss; resolves with a copy (yours)
 * or NULL. */
typedef struct tn__cget {
    tn_cache *c;
    tn_future *out;
} tn__cget;
static void tn__cache_got(tn_future *f, void *arg) {
    tn__cget *g = (tn__cget *)arg;
    int err = tn_future_error(f);
    void *v = err ? NULL : tn_future_take(f);
    tn_free_fn fr = f->free_value;
    tn_future_release(f);
    if (!err) {
        if (v) g->c->stats.hits++;
        else g->c->stats.misses++;
    }
    if (err) tn_future_fail(g->out, err);
    else tn_future_resolve_owned(g->out, v, fr);
    tn__free(g);
}
tn_future *tn_cache_get(tn_cache *c, const char *key) {
    tn__cget *g = (tn__cget *)tn__malloc(c->loop, sizeof *g);
    tn_future *in, *out = tn_future_new(c->loop);
    if (!g || !out || !(in = c->be->get(c->impl, key))) {
        tn__free(g);
        if (out) tn__future_abandon(out);
        return NULL;
    }
    g->c = c;
    g->out = out;
    tn_future_on_done(in, tn__cache_got, g); /* a cancel of out just drops the result */
    return out;
}

/* A write to the key (or the keys under prefix) makes the flights for it
 * stale: a fetch from now on starts its own, and what they compute with
 * what the store or the source held before is not stored over the write. */
static void tn__cache_overtake(tn_cache *c, const char *key, int prefix) {
    tn__flight *fl;
    size_t kl = strlen(key);
    for (fl = c->flights; fl; fl = fl->next)
        if (prefix ? strncmp(fl->key, key, kl) == 0 : strcmp(fl->key, key) == 0) fl->stale = 1;
}
tn_future *tn_cache_set(tn_cache *c, const char *key, const void *data, size_t len, uint64_t ttl_ms) {
    tn__cache_overtake(c, key, 0);
    return c->be->set(c->impl, key, data, len, ttl_ms ? ttl_ms : c->opts.ttl_ms);
}
tn_future *tn_cache_delete(tn_cache *c, const char *key) {
    tn__cache_overtake(c, key, 0);
    return c->be->del(c->impl, key);
}
tn_future *tn_cache_delete_prefix(tn_cache *c, const char *prefix) {
    if (!prefix) prefix = "";
    tn__cache_overtake(c, prefix, 1);
    return c->be->del_prefix(c->impl, prefix);
}
void tn_cache_get_stats(const tn_cache *c, tn_cache_stats *out) { *out = c->stats; }

int tn_cache_new(tn_loop *l, const tn_cache_opts *o, tn_cache **out) {
    tn_cache *c = (tn_cache *)tn__malloc(l, sizeof *c);
    *out = NULL;
    if (!c) return TN_ENOMEM;
    memset(c, 0, sizeof *c);
    c->loop = l;
    if (o) c->opts = *o;
    if (!c->opts.max_bytes) c->opts.max_bytes = TN_CACHE_MAX_BYTES;
    if (!c->opts.ttl_ms) c->opts.ttl_ms = 60000;
    if (c->opts.backend) {
        c->be = c->opts.backend;
        c->impl = c->opts.backend_impl;
    } else {
        tn__cmem *m = (tn__cmem *)tn__malloc(l, sizeof *m);
        if (!m) {
            tn__free(c);
            return TN_ENOMEM;
        }
        memset(m, 0, sizeof *m);
        m->loop = l;
        m->seed = tn__clock_ns() ^ (uint64_t)(uintptr_t)m ^ ((uint64_t)(uintptr_t)&m << 21) ^
                  ((uint64_t)(uintptr_t)&tn__cmem_backend << 42);
        m->max_bytes = c->opts.max_bytes;
        m->stats = &c->stats;
        c->be = &tn__cmem_backend;
        c->impl = m;
    }
#if !defined(TN_NO_HTTP_SERVER) && !TN__MINIMAL
    c->route_lookup = tn__req_cache_lookup;
    c->route_store = tn__req_cache_store;
#endif
    *out = c;
    return 0;
}

#if !defined(TN_NO_HTTP_SERVER) && !TN__MINIMAL
static int tn__cache_route_lookup(tn_cache *c, void *req) { return c->route_lookup(req); }
static void tn__cache_route_store(tn_cache *c, void *req, int status, const char *ctype, const char *body, size_t len) {
    c->route_store(req, status, ctype, body, len);
}
#endif

void tn_cache_free(tn_cache *c) {
    if (!c) return;
    while (c->flights) {
        tn__flight *fl = c->flights;
        if (fl->pending) { /* stop what it waits for; our callback must not run */
            tn_future *f = fl->pending;
            fl->pending = NULL;
            f->done_fn = NULL;
            tn_future_cancel(f);
            tn_future_release(f);
        }
        tn__flight_end(fl, TN_ECANCELLED, NULL, 0);
    }
    if (c->be->free) c->be->free(c->impl);
    tn__free(c);
}

#ifndef TN_NO_HTTP_CLIENT
/* ============================================================ HTTP client
 * Pools of connections per host:port; a connection is an owner of a stream
 * and reads response bodies with the body reader, as the server does. */
typedef struct tn__fetch tn__fetch;
typedef struct tn__hconn tn__hconn;

/* One pool per host:port: its idle connections and its waiting fetches. */
typedef struct tn__hpool {
    struct tn__hpool *next;
    char *key; /* the host, as in the URL; with port and tls, the pool's identity */
    int port;
    tn__hconn *idle;
    tn__fetch *qhead, *qtail;
    size_t active; /* connections open or opening, idle ones included */
    int tls;
    void *tls_session; /* the last TLS session, resumed by the next connection */
} tn__hpool;

struct tn_http_client {
    tn_loop *loop;
    tn_http_client_opts opts;
    tn_tls_ctx *tls; /* https: opts.tls, or the default made on first use */
    tn__hpool *pools;
    tn__fetch *fetches; /* every fetch in flight, for tn_http_client_free */
    size_t nfetches;
    int closing;
    tn__fetch *fetch_free; /* done fetch records kept for reuse (TN_BUF_POOL of them) */
    size_t nfetch_free;
};

#define TN__H_IDLE 0
#define TN__H_CONNECTING 1
#define TN__H_HEAD 2
#define TN__H_BODY 3

struct tn__hconn {
    tn_stream s; /* first */
    tn__connector cn;
    tn_http_client *cl;
    tn__hpool *pool;
    tn__hconn *next_idle;
    tn__fetch *fetch;
    tn_timer idle_timer;
    int state, reused, idle_timer_armed, got_bytes, keep, interim;
    size_t prev_len;
    tn__body body;
    tn_timer hs_timer; /* TLS: the handshake's deadline (connect_timeout_ms) */
    int hs_armed;
};

struct tn__fetch {
    tn_http_client *cl;
    tn_future *f;
    tn__hpool *pool;
    tn__hconn *conn;
    tn__fetch *next; /* in the pool's queue */
    tn__fetch *all_prev, *all_next;
    tn_http_fetch_opts opts; /* with method/body/headers pointing at our copies */
    char *method, *hdrs;     /* hdrs: "Name: value\r\n"..., the user's but Host */
    char method_buf[16];     /* method, when it fits (the usual case): no allocation */
    const char *body;        /* ours: a copy, or the caller's given with body_free */
    char *host_hdr;          /* the user's Host value, or NULL */
    size_t hdrs_len;
    char *url, *host, *target; /* host: as in the URL (for Host:); target: path?query.
                                  One block, url first: freeing url frees all three. */
    int port, user_agent;      /* user_agent: the user's headers have one */
    int tls;                   /* https */
    tn_http_response *resp;
    size_t body_cap;
    tn_timer timer;
    int timer_armed, queued, retried, redirects;
    uint64_t start_ns, dequeued_ns;
};

#define TN__FETCH_MAX_HEADERS TN_HTTP_MAX_HEADERS

static void tn__fetch_fail(tn__fetch *fe, int err);
static void tn__fetch_dispatch(tn__fetch *fe);
static void tn__hconn_close(tn__hconn *hc);

void tn_http_response_free(void *p) {
    tn_http_response *r = (tn_http_response *)p;
    if (!r) return;
    tn__free(r->headers); /* the strings and the reason live in the same block */
    tn__free(r->body);
    tn__free(r->effective_url);
    tn__free(r);
}

const char *tn_http_response_header(const tn_http_response *r, const char *name) {
    size_t i;
    for (i = 0; i < r->num_headers; i++)
        if (tn_http_header_eq(&r->headers[i], name)) return r->headers[i].value;
    return NULL;
}


int tn_http_client_new(tn_loop *l, const tn_http_client_opts *opts, tn_http_client **out) {
    tn_http_client *c = (tn_http_client *)tn__malloc(l, sizeof *c);
    *out = NULL;
    if (!c) return TN_ENOMEM;
    memset(c, 0, sizeof *c);
    c->loop = l;
    if (opts) c->opts = *opts;
    if (!c->opts.max_clients) c->opts.max_clients = 10;
    if (!c->opts.connect_timeout_ms) c->opts.connect_timeout_ms = 20000;
    if (!c->opts.request_timeout_ms) c->opts.request_timeout_ms = 20000;
    if (!c->opts.idle_timeout_ms) c->opts.idle_timeout_ms = 30000;
    if (!c->opts.max_body_bytes) c->opts.max_body_bytes = 100u * 1024 * 1024;
#if TN__TLS
    if ((c->tls = c->opts.tls) != NULL) c->tls->refs++;
#endif
    *out = c;
    return 0;
}

/* Splits "http://host[:port]/target" into the fetch. */
static int tn__fetch_set_url(tn__fetch *fe, const char *url) {
    const char *p, *hs, *he, *ts;
    size_t n = strlen(url);
    long port = 80;
    int tls = n >= 8 && strncasecmp(url, "https://", 8) == 0;
    if (tls && !TN__TLS) return TN_ENOTLS;
    if (!tls && (n < 8 || strncasecmp(url, "http://", 7) != 0)) return TN_EINVAL;
    if (tls) port = 443;
    hs = url + 7 + tls;
    ts = hs + strcspn(hs, "/?#");
    if (hs[0] == '[') { /* [v6]:port */
        const char *rb = (const char *)memchr(hs, ']', (size_t)(ts - hs));
        if (!rb) return TN_EINVAL;
        he = rb + 1;
    } else {
        he = (const char *)memchr(hs, ':', (size_t)(ts - hs));
        if (!he) he = ts;
    }
    if (he == hs || memchr(hs, '@', (size_t)(ts - hs))) return TN_EINVAL; /* no userinfo */
    if (he < ts && *he == ':') {
        char *end;
        port = strtol(he + 1, &end, 10);
        if (end != ts || port <= 0 || port > 65535) return TN_EINVAL;
    } else if (he != ts) {
        return TN_EINVAL;
    }
    for (p = ts; *p && *p != '#'; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f) return TN_EINVAL; /* would break the request line */
    tn__free(fe->url);
    fe->url = fe->host = fe->target = NULL;
    {
        /* "http://h?q" -> "/?q"; bytes >= 0x80 (a UTF-8 Location) are
         * not allowed raw in a request-target: %XX (RFC 3986 2.1). */
        size_t tl = strcspn(ts, "#"), i, o = 0, extra = 0, hl = (size_t)(he - hs);
        for (i = 0; i < tl; i++) extra += (unsigned char)ts[i] >= 0x80 ? 2 : 0;
        /* url, host and target in one block */
        if ((fe->url = (char *)tn__malloc(fe->cl->loop, n + 1 + hl + 1 + tl + extra + 2)) != NULL) {
            memcpy(fe->url, url, n + 1);
            fe->host = fe->url + n + 1;
            memcpy(fe->host, hs, hl);
            fe->host[hl] = 0;
            fe->target = fe->host + hl + 1;
            if (*ts != '/') fe->target[o++] = '/';
            for (i = 0; i < tl; i++) {
                unsigned char ch = (unsigned char)ts[i];
                if (ch < 0x80) {
                    fe->target[o++] = (char)ch;
                    continue;
                }
                fe->target[o++] = '%';
                fe->target[o++] = "0123456789ABCDEF"[ch >> 4];
                fe->target[o++] = "0123456789ABCDEF"[ch & 15];
            }
            fe->target[o] = 0;
        }
    }
    fe->port = (int)port;
    fe->tls = tls;
    return fe->url ? 0 : TN_ENOMEM;
}

static tn__hpool *tn__pool_for(tn_http_client *c, const char *host, int port, int tls) {
    tn__hpool *p;
    for (p = c->pools; p; p = p->next)
        if (p->port == port && p->tls == tls && strcmp(p->key, host) == 0) return p;
    p = (tn__hpool *)tn__malloc(c->loop, sizeof *p);
    if (!p) return NULL;
    memset(p, 0, sizeof *p);
    if (!(p->key = tn__strndup(c->loop, host, strlen(host)))) {
        tn__free(p);
        return NULL;
    }
    p->port = port;
    p->tls = tls;
    p->next = c->pools;
    c->pools = p;
    return p;
}

static void tn__fetch_free(tn__fetch *fe) {
    if (fe->timer_armed) tn_cancel_timer(fe->cl->loop, fe->timer);
    tn_http_response_free(fe->resp);
    if (fe->method != fe->method_buf) tn__free(fe->method);
    if (fe->body && fe->opts.body_free) fe->opts.body_free((void *)(uintptr_t)fe->body);
    else tn__free((void *)(uintptr_t)fe->body);
    tn__free(fe->hdrs);
    tn__free(fe->host_hdr);
    tn__free(fe->url); /* and host and target */
    if (fe->all_prev) fe->all_prev->all_next = fe->all_next;
    else fe->cl->fetches = fe->all_next;
    if (fe->all_next) fe->all_next->all_prev = fe->all_prev;
    fe->cl->nfetches--;
    if (fe->cl->nfetch_free + 1 <= TN_BUF_POOL) { /* not "<": -Wtype-limits at 0 */
        fe->next = fe->cl->fetch_free;
        fe->cl->fetch_free = fe;
        fe->cl->nfetch_free++;
        return;
    }
    tn__free(fe);
}

static void tn__fetch_timer(tn__fetch *fe, unsigned ms, tn_callback_fn fn) {
    if (fe->timer_armed) tn_cancel_timer(fe->cl->loop, fe->timer);
    fe->timer_armed = tn_call_later(fe->cl->loop, ms, fn, fe, &fe->timer) == 0;
}

static void tn__pool_unqueue(tn__hpool *p, tn__fetch *fe) {
    tn__fetch **pp;
    for (pp = &p->qhead; *pp; pp = &(*pp)->next) {
        if (*pp != fe) continue;
        *pp = fe->next;
        if (p->qtail == fe) {
            tn__fetch *t = p->qhead;
            while (t && t->next) t = t->next;
            p->qtail = t;
        }
        break;
    }
    fe->queued = 0;
}

/* The fetch is over: detach it from its connection and settle the future
 * (unless err is TN_ECANCELLED from a cancel, where it is settled). */
static void tn__fetch_fail(tn__fetch *fe, int err) {
    tn__hconn *hc = fe->conn;
    if (fe->queued) tn__pool_unqueue(fe->pool, fe);
    if (hc) {
        hc->fetch = NULL;
        fe->conn = NULL;
        tn__hconn_close(hc); /* mid-request: the connection cannot be reused */
    }
    if (fe->f) tn_future_fail(fe->f, err);
    tn__fetch_free(fe);
}

static void tn__fetch_queue_timeout(tn_loop *l, void *arg) {
    (void)l;
    ((tn__fetch *)arg)->timer_armed = 0;
    tn__fetch_fail((tn__fetch *)arg, TN_EQUEUETIMEOUT);
}
static void tn__fetch_request_timeout(tn_loop *l, void *arg) {
    (void)l;
    ((tn__fetch *)arg)->timer_armed = 0;
    tn__fetch_fail((tn__fetch *)arg, TN_ETIMEOUT);
}

static void tn__fetch_cancelled(tn_future *f, void *arg) {
    tn__fetch *fe = (tn__fetch *)arg;
    tn_future_fail(f, TN_ECANCELLED); /* ends our producer part */
    fe->f = NULL;
    tn__fetch_fail(fe, TN_ECANCELLED);
}

/* ---- connections */
static void tn__hconn_free(tn__hconn *hc) {
    tn__hpool *p = hc->pool;
    tn_http_client *c = hc->cl;
    if (hc->idle_timer_armed) tn_cancel_timer(c->loop, hc->idle_timer);
    if (hc->hs_armed) tn_cancel_timer(c->loop, hc->hs_timer);
    if (hc->s.loop) { /* (not yet if the connect failed) */
        tn__stream_close(&hc->s); /* (a no-op if closed: frees the TLS state if any) */
        tn__stream_in_release(&hc->s);
    }
    p->active--;
    tn__free(hc);
    /* A slot freed up: start the next queued fetch. */
    if (p->qhead && !c->closing) {
        tn__fetch *fe = p->qhead;
        tn__pool_unqueue(p, fe);
        tn__fetch_dispatch(fe);
    }
}

static void tn__hconn_close(tn__hconn *hc) {
    tn__hpool *p = hc->pool;
    tn__hconn **pp;
    if (hc->state == TN__H_CONNECTING) tn__connector_abort(&hc->cn);
    else tn__stream_close(&hc->s);
    for (pp = &p->idle; *pp; pp = &(*pp)->next_idle)
        if (*pp == hc) {
            *pp = hc->next_idle;
            break;
        }
    tn__hconn_free(hc);
}

static void tn__hconn_idle_timeout(tn_loop *l, void *arg) {
    tn__hconn *hc = (tn__hconn *)arg;
    (void)l;
    hc->idle_timer_armed = 0;
    tn__hconn_close(hc);
}

/* Builds and queues the request: the head in one reservation (all of it or
 * nothing: a partial write would corrupt the connection), then the body by
 * reference (the fetch keeps it until it ends: a redirect may send it
 * again). */
static int tn__fetch_send(tn__fetch *fe) {
    tn__hconn *hc = fe->conn;
    tn_stream *s = &hc->s;
    size_t ml = strlen(fe->method), tl = strlen(fe->target), hl = strlen(fe->host);
    size_t hh = fe->host_hdr ? strlen(fe->host_hdr) : 0;
    int framed = fe->opts.body_len || strcmp(fe->method, "POST") == 0 || strcmp(fe->method, "PUT") == 0 ||
                 strcmp(fe->method, "PATCH") == 0;
    char *p = tn__stream_room(s, ml + tl + hl + hh + fe->hdrs_len + 128), *start = p;
    if (!p) return TN_ENOMEM;
    p = tn__put(p, fe->method, ml);
    *p++ = ' ';
    p = tn__put(p, fe->target, tl);
    p = tn__put(p, " HTTP/1.1\r\nHost: ", 17);
    if (fe->host_hdr) {
        p = tn__put(p, fe->host_hdr, hh);
    } else {
        p = tn__put(p, fe->host, hl);
        if (fe->port != (fe->tls ? 443 : 80)) {
            *p++ = ':';
            p = tn__put_u64(p, (uint64_t)fe->port, 0);
        }
    }
    p = tn__put(p, "\r\n", 2);
    if (fe->hdrs_len) p = tn__put(p, fe->hdrs, fe->hdrs_len);
    if (!fe->user_agent) p = tn__put(p, "User-Agent: tornado.h\r\n", 23);
    if (framed) {
        p = tn__put(p, "Content-Length: ", 16);
        p = tn__put_u64(p, (uint64_t)fe->opts.body_len, 0);
        p = tn__put(p, "\r\n", 2);
    }
    p = tn__put(p, "\r\n", 2);
    tn__stream_commit(s, (size_t)(p - start));
    if (fe->opts.body_len && tn__stream_queue_ref(s, NULL, 0, fe->body, -1, 0, fe->opts.body_len, NULL, 0, NULL, NULL))
        return TN_ENOMEM; /* the head alone is out: the connection is closed by the caller */
    hc->state = TN__H_HEAD;
    hc->prev_len = 0;
    hc->got_bytes = 0;
    hc->interim = 0;
    /* A failed write already ran on_error, which retried or failed the
     * fetch and freed hc: returning an error made the callers read
     * hc->fetch from freed memory (a pooled connection reset while idle). */
    if (tn__stream_flush(s)) return 0;
    tn__stream_set_reading(s, 1);
    return 0;
}

static int tn__method_idempotent(const char *m) {
    return strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0 || strcmp(m, "PUT") == 0 ||
           strcmp(m, "DELETE") == 0 || strcmp(m, "OPTIONS") == 0 || strcmp(m, "TRACE") == 0;
}

/* A connection failed. If it was a reused one that died before a byte of
 * the response (the server closed it while it sat in the pool), an
 * idempotent request is retried once on a fresh connection. */
static void tn__hconn_failed(tn__hconn *hc, int err) {
    tn__fetch *fe = hc->fetch;
    if (fe && hc->reused && !hc->got_bytes && !fe->retried && tn__method_idempotent(fe->method)) {
        fe->retried = 1;
        hc->fetch = NULL;
        fe->conn = NULL;
        tn__hconn_close(hc);
        tn__fetch_dispatch(fe);
        return;
    }
    if (fe) tn__fetch_fail(fe, err);
    else tn__hconn_close(hc);
}

/* (C++ has no tentative definitions: declare the callbacks, define the table.) */
static void tn__hconn_on_read(tn_stream *s);
static void tn__hconn_on_drain(tn_stream *s);
static void tn__hconn_on_error(tn_stream *s, int err);
static size_t tn__hconn_in_limit(tn_stream *s) {
    (void)s;
    return TN_HTTP_MAX_HEAD + 1; /* a whole head or trailer section, and a byte to tell it is over */
}
static void tn__hconn_on_secure(tn_stream *s) {
    tn__hconn *hc = (tn__hconn *)s;
    if (hc->hs_armed) tn_cancel_timer(hc->cl->loop, hc->hs_timer);
    hc->hs_armed = 0;
}
static const tn__stream_ops tn__hconn_ops = {tn__hconn_on_read, tn__hconn_on_drain, tn__hconn_on_error,
                                             tn__hconn_in_limit, 0, tn__hconn_on_secure, NULL};

#if TN__TLS
static void tn__hconn_hs_timeout(tn_loop *l, void *arg) {
    tn__hconn *hc = (tn__hconn *)arg;
    (void)l;
    hc->hs_armed = 0;
    if (!(hc->s.flags & TN__S_HANDSHAKE)) return;
    tn__stream_close(&hc->s);
    tn__hconn_failed(hc, TN_ETLS_TIMEOUT);
}
#endif

static void tn__hconn_connected(tn__connector *cn, int fd, int err) {
    tn__hconn *hc = (tn__hconn *)((char *)cn - offsetof(tn__hconn, cn));
    tn__fetch *fe = hc->fetch;
    if (err) {
        hc->state = TN__H_IDLE; /* nothing to abort */
        hc->s.flags |= TN__S_CLOSED;
        if (fe) tn__fetch_fail(fe, err);
        else tn__hconn_close(hc);
        return;
    }
    if (tn__stream_init(&hc->s, hc->cl->loop, fd, &tn__hconn_ops)) {
        close(fd);
        hc->state = TN__H_IDLE;
        hc->s.flags |= TN__S_CLOSED;
        if (fe) tn__fetch_fail(fe, TN_ENOMEM);
        else tn__hconn_close(hc); /* the fetch went away while connecting: nobody else frees hc */
        return;
    }
    /* Connected: from here on tn__hconn_close must close the stream (its fd
     * is registered with hc as the handler's arg), not abort a connect. */
    hc->state = TN__H_IDLE;
    {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
#if TN__TLS
    if (hc->pool->tls) {
        /* TLS first: the request is queued now and goes when it is done. */
        tn_http_client *c = hc->cl;
        if (!c->tls && (err = tn_tls_client_ctx_new(NULL, &c->tls)) != 0) {
            tn__hconn_failed(hc, err);
            return;
        }
        if ((err = tn__stream_start_tls(&hc->s, c->tls, fe ? fe->host : NULL, hc->pool->tls_session)) != 0) {
            tn__hconn_failed(hc, err);
            return;
        }
        hc->hs_armed = tn_call_later(c->loop, fe ? fe->opts.connect_timeout_ms : c->opts.connect_timeout_ms,
                                     tn__hconn_hs_timeout, hc, &hc->hs_timer) == 0;
    }
#endif
    if (!fe) { /* the fetch went away while connecting: pool it */
        hc->state = TN__H_IDLE;
        hc->next_idle = hc->pool->idle;
        hc->pool->idle = hc;
        return;
    }
    if ((err = tn__fetch_send(fe)) != 0 && hc->fetch == fe) tn__fetch_fail(fe, err);
}

/* Starts a fetch on a pooled connection, a new one, or queues it. */
static void tn__fetch_dispatch(tn__fetch *fe) {
    tn_http_client *c = fe->cl;
    tn__hpool *p = fe->pool;
    tn__hconn *hc = p->idle;
    if (hc) {
        p->idle = hc->next_idle;
        if (hc->idle_timer_armed) tn_cancel_timer(c->loop, hc->idle_timer);
        hc->idle_timer_armed = 0;
    }
    if (!fe->dequeued_ns) {
        fe->dequeued_ns = tn__clock_ns();
        /* response.queue_ms was never set (always 0): it is the wait of
         * the first request for a connection (overwritten if it queues). */
        if (fe->resp && !fe->redirects) fe->resp->queue_ms = (fe->dequeued_ns - fe->start_ns) / 1000000u;
        tn__fetch_timer(fe, fe->opts.request_timeout_ms, tn__fetch_request_timeout);
    }
    if (hc) {
        int rc;
        hc->fetch = fe;
        hc->reused = 1;
        fe->conn = hc;
        rc = tn__fetch_send(fe);
        if (rc && hc->fetch == fe) tn__hconn_failed(hc, rc);
        return;
    }
    if (p->active >= c->opts.max_clients) {
        /* Wait for a connection; the queue has its own timeout. */
        fe->dequeued_ns = 0;
        fe->queued = 1;
        fe->next = NULL;
        if (p->qtail) p->qtail->next = fe;
        else p->qhead = fe;
        p->qtail = fe;
        tn__fetch_timer(fe, fe->opts.queue_timeout_ms, tn__fetch_queue_timeout);
        return;
    }
    hc = (tn__hconn *)tn__malloc(fe->cl->loop, sizeof *hc);
    if (!hc) {
        tn__fetch_fail(fe, TN_ENOMEM);
        return;
    }
    memset(hc, 0, sizeof *hc);
    hc->cl = c;
    hc->pool = p;
    hc->fetch = fe;
    hc->state = TN__H_CONNECTING;
    hc->s.fd = -1;
    hc->cn.done = tn__hconn_connected;
    p->active++;
    fe->conn = hc;
    tn__connector_start(&hc->cn, c->loop, fe->host, fe->port, fe->opts.connect_timeout_ms);
}

/* ---- the response */
static int tn__resp_append(tn__fetch *fe, const char *p, size_t n) {
    tn_http_response *r = fe->resp;
    if (!n) return 0;
    if (fe->opts.on_chunk) return fe->opts.on_chunk(p, n, fe->opts.chunk_arg);
    if (r->body_len + n > fe->opts.max_body_bytes) return TN_ETOOLARGE;
    if (r->body_len + n + 1 > fe->body_cap) {
        size_t ncap = fe->body_cap ? fe->body_cap : 4096;
        char *nb;
        while (ncap < r->body_len + n + 1) ncap *= 2;
        nb = (char *)tn__realloc(fe->cl->loop, r->body, ncap);
        if (!nb) return TN_ENOMEM;
        r->body = nb;
        fe->body_cap = ncap;
    }
    memcpy(r->body + r->body_len, p, n);
    r->body_len += n;
    r->body[r->body_len] = 0;
    return 0;
}

/* Copies the parsed head into the response (one block for the headers). */
static int tn__resp_from_head(tn__fetch *fe, const tn_http_message *m) {
    tn_http_response *r = fe->resp;
    size_t i, bytes = m->num_headers * sizeof(tn_http_header) + m->reason_len + 1;
    char *block, *o;
    for (i = 0; i < m->num_headers; i++) bytes += m->headers[i].name_len + m->headers[i].value_len + 2;
    block = (char *)tn__malloc(fe->cl->loop, bytes);
    if (!block) return TN_ENOMEM;
    tn__free(r->headers); /* and the reason */
    r->headers = (tn_http_header *)(void *)block;
    o = block + m->num_headers * sizeof(tn_http_header);
    for (i = 0; i < m->num_headers; i++) {
        tn_http_header *h = &r->headers[i];
        memcpy(o, m->headers[i].name, m->headers[i].name_len);
        o[m->headers[i].name_len] = 0;
        h->name = o;
        h->name_len = m->headers[i].name_len;
        o += h->name_len + 1;
        memcpy(o, m->headers[i].value, m->headers[i].value_len);
        o[m->headers[i].value_len] = 0;
        h->value = o;
        h->value_len = m->headers[i].value_len;
        o += h->value_len + 1;
    }
    r->num_headers = m->num_headers;
    r->status = m->status;
    if (m->reason_len) memcpy(o, m->reason, m->reason_len);
    o[m->reason_len] = 0;
    r->reason = o;
    return 0;
}

/* Resolves a Location against the current URL: absolute http(s) URLs,
 * "//host/..." and "/path" and relative "path". */
static char *tn__resolve_location(const tn__fetch *fe, const char *loc, const char *host) {
    size_t n = strlen(loc);
    const char *scheme = fe->tls ? "https" : "http";
    char *out;
    if (strncasecmp(loc, "http://", 7) == 0 || strncasecmp(loc, "https://", 8) == 0) return tn__strndup(fe->cl->loop, loc, n);
    out = (char *)tn__malloc(fe->cl->loop, strlen(host) + strlen(fe->target) + n + 40);
    if (!out) return NULL;
    if (loc[0] == '/' && loc[1] == '/') sprintf(out, "%s:%s", scheme, loc);
    else if (loc[0] == '/') sprintf(out, "%s://%s:%d%s", scheme, host, fe->port, loc);
    else {
        const char *slash = strrchr(fe->target, '/');
        size_t dl = slash ? (size_t)(slash - fe->target) + 1 : 1;
        sprintf(out, "%s://%s:%d%.*s%s", scheme, host, fe->port, (int)dl, slash ? fe->target : "/", loc);
    }
    return out;
}

/* A whole response is in: follow a redirect, or hand it over. */
static void tn__fetch_complete(tn__fetch *fe, int keep_alive) {
    tn__hconn *hc = fe->conn;
    tn_http_response *r = fe->resp;
    const char *loc = tn_http_response_header(r, "Location");
    int st = r->status;
    hc->fetch = NULL;
    fe->conn = NULL;
    /* Reusable only if nothing is left either way: the server may have
     * answered before it read our whole body (a 413, say). */
    if (keep_alive && !(hc->s.flags & (TN__S_EOF | TN__S_CLOSED)) && !tn__stream_avail(&hc->s) &&
        !tn__stream_pending(&hc->s)) {
        hc->state = TN__H_IDLE;
        tn__stream_in_release(&hc->s);
        hc->next_idle = hc->pool->idle;
        hc->pool->idle = hc;
        hc->idle_timer_armed =
            tn_call_later(hc->cl->loop, hc->cl->opts.idle_timeout_ms, tn__hconn_idle_timeout, hc, &hc->idle_timer) == 0;
        tn__stream_set_reading(&hc->s, 1); /* to notice the server closing it */
        if (fe->pool->qhead) { /* hand it to a waiting fetch */
            tn__fetch *next = fe->pool->qhead;
            tn__pool_unqueue(fe->pool, next);
            tn__fetch_dispatch(next);
        }
    } else {
        tn__hconn_close(hc);
    }
    if (loc && !fe->opts.no_redirects && (st == 301 || st == 302 || st == 303 || st == 307 || st == 308)) {
        char *next;
        int rc;
        if (++fe->redirects > fe->opts.max_redirects) {
            tn__fetch_fail(fe, TN_EREDIRECTS);
            return;
        }
        {
            char *old_url = fe->url, *old_host = fe->host; /* one block, kept to compare */
            int old_port = fe->port, old_tls = fe->tls;
            fe->url = NULL;
            next = tn__resolve_location(fe, loc, old_host);
            rc = next ? tn__fetch_set_url(fe, next) : TN_ENOMEM;
            tn__free(next);
            /* A Host the user set names the first server, not another. */
            if (!rc && (old_port != fe->port || old_tls != fe->tls || strcmp(old_host, fe->host) != 0)) {
                tn__free(fe->host_hdr);
                fe->host_hdr = NULL;
            }
            if (rc) fe->host = fe->target = NULL; /* they were in the old block */
            tn__free(old_url);
            if (rc) {
                tn__fetch_fail(fe, rc);
                return;
            }
        }
        /* 303 (and 301/302 after a POST, as browsers and Tornado do) turn
         * into a GET without a body; 307/308 repeat the request as it was. */
        if (st == 303 || ((st == 301 || st == 302) && strcmp(fe->method, "POST") == 0)) {
            if (fe->method != fe->method_buf) tn__free(fe->method);
            fe->method = strcpy(fe->method_buf, "GET");
            fe->opts.body_len = 0;
        }
        fe->pool = tn__pool_for(fe->cl, fe->host, fe->port, fe->tls);
        if (!fe->pool) {
            tn__fetch_fail(fe, TN_ENOMEM);
            return;
        }
        fe->retried = 0;
        r->body_len = 0;
        if (r->body) r->body[0] = 0; /* NUL-terminated, and the redirect's bytes gone */
        tn__fetch_dispatch(fe);
        return;
    }
    /* body is documented NUL-terminated: an empty one (304, HEAD,
     * streaming) was NULL, and strcmp(r->body, "") crashed. */
    if (!r->body && !(r->body = tn__strndup(fe->cl->loop, "", 0))) {
        tn__fetch_fail(fe, TN_ENOMEM);
        return;
    }
    fe->resp = NULL;
    r->redirects = fe->redirects;
    r->effective_url = fe->url;
    fe->url = NULL;
    r->total_ms = (tn__clock_ns() - fe->start_ns) / 1000000u;
    if (fe->f) tn_future_resolve_owned(fe->f, r, tn_http_response_free);
    else tn_http_response_free(r);
    tn__fetch_free(fe);
}

/* Reads the response as it arrives. */
/* The TLS session for the pool's next new connection to resume. Taken
 * when the head is in: TLS 1.3 sends it after the handshake, so by now it
 * has come, and later a peer that closes without close_notify makes the
 * library mark it not resumable. */
static void tn__hconn_save_session(tn__hconn *hc, tn_http_response *r) {
#if TN__TLS
    void *ss;
    if (!hc->s.io || !hc->s.io->tls) return;
    r->tls_resumed = tn__tlsb_resumed(hc->s.io->tls);
    if ((ss = tn__tlsb_session_get(hc->s.io->tls)) != NULL) {
        if (hc->pool->tls_session) tn__tlsb_session_free(hc->pool->tls_session);
        hc->pool->tls_session = ss;
    }
#else
    (void)hc;
    (void)r;
#endif
}

static void tn__hconn_on_read(tn_stream *s) {
    tn__hconn *hc = (tn__hconn *)s;
    tn__fetch *fe = hc->fetch;
    tn_http_limits lim;
    memset(&lim, 0, sizeof lim);
    for (;;) {
        size_t avail = tn__stream_avail(s);
        char *p = avail ? s->io->in.data + s->io->in.off : NULL, *data;
        size_t dlen;
        int rc, done, eof = (s->flags & TN__S_EOF) != 0;
        if (!fe) { /* idle: any byte or a close ends it */
            tn__hconn_close(hc);
            return;
        }
        if (avail) hc->got_bytes = 1;
        if (hc->state == TN__H_HEAD) {
            tn_http_message m;
            tn_http_header hdr[TN__FETCH_MAX_HEADERS];
            rc = tn_http_parse_response(p, avail, hc->prev_len, &m, hdr, TN__FETCH_MAX_HEADERS, &lim, fe->method);
            if (rc == TN_EAGAIN) {
                hc->prev_len = avail;
                if (eof) tn__hconn_failed(hc, TN_ECLOSED);
                return;
            }
            if (rc < 0) {
                tn__fetch_fail(fe, rc == TN_EHEADERS ? TN_EHEADERS : TN_EMALFORMED);
                return;
            }
            s->io->in.off += (size_t)rc;
            hc->prev_len = 0;
            if (m.status >= 100 && m.status < 200 && m.status != 101) {
                /* 100 Continue and friends: skipped, but not forever (a
                 * server that sends them without end held the client's
                 * buffer growing for minutes). */
                if (++hc->interim > TN_HTTP_MAX_INTERIM) {
                    tn__fetch_fail(fe, TN_EINTERIM);
                    return;
                }
                continue;
            }
            if ((rc = tn__resp_from_head(fe, &m)) != 0) {
                tn__fetch_fail(fe, rc);
                return;
            }
            fe->resp->reused = hc->reused;
            tn__hconn_save_session(hc, fe->resp);
            hc->keep = m.keep_alive;
            if (m.content_length > 0 && !fe->opts.on_chunk && (uint64_t)m.content_length > fe->opts.max_body_bytes) {
                tn__fetch_fail(fe, TN_ETOOLARGE);
                return;
            }
            tn__body_start(&hc->body, &m, fe->opts.on_chunk ? 0 : fe->opts.max_body_bytes);
            if (hc->body.kind == TN__B_NONE) {
                tn__fetch_complete(fe, m.keep_alive);
                return;
            }
            hc->state = TN__H_BODY;
            continue;
        }
        if (hc->state != TN__H_BODY) return;
        rc = tn__body_feed(&hc->body, p, avail, eof, &lim, &data, &dlen, &done);
        if (rc < 0) { /* TN_ECLOSED: cut off, never a short body as success */
            tn__fetch_fail(fe, rc);
            return;
        }
        s->io->in.off += (size_t)rc;
        if ((rc = tn__resp_append(fe, data, dlen)) != 0) {
            tn__fetch_fail(fe, rc);
            return;
        }
        if (done) {
            tn__fetch_complete(fe, hc->body.kind == TN__B_CLOSE ? 0 : hc->keep);
            return;
        }
        if (s->io->in.off == s->io->in.len) s->io->in.off = s->io->in.len = 0;
        return;
    }
}

static void tn__hconn_on_drain(tn_stream *s) { (void)s; }

static void tn__hconn_on_error(tn_stream *s, int err) {
    tn__hconn *hc = (tn__hconn *)s;
    tn__hconn_failed(hc, err == -ECONNRESET || err == -EPIPE ? TN_ECLOSED : err);
}

/* The user's "Name: value" headers, checked and copied into fe->hdrs: the
 * defaults (Host, User-Agent) give way to the user's, whatever their case;
 * the framing is the client's (Content-Length, Transfer-Encoding refused). */
static int tn__fetch_headers(tn__fetch *fe, const char *const *headers) {
    size_t i, total = 0;
    for (i = 0; headers[i]; i++) total += strlen(headers[i]) + 3;
    if (!total) return 0;
    if (!(fe->hdrs = (char *)tn__malloc(fe->cl->loop, total))) return TN_ENOMEM;
    for (i = 0; headers[i]; i++) {
        const char *h = headers[i], *colon = strchr(h, ':'), *v, *ve, *q;
        size_t nl, vl;
        if (!colon || colon == h) return TN_EINVAL;
        nl = (size_t)(colon - h);
        for (q = h; q < colon; q++)
            if (!tn__http_is_tchar((unsigned char)*q)) return TN_EINVAL;
        for (v = colon + 1; *v == ' ' || *v == '\t'; v++) {}
        for (ve = v + strlen(v); ve > v && (ve[-1] == ' ' || ve[-1] == '\t'); ve--) {}
        vl = (size_t)(ve - v);
        for (q = v; q < ve; q++) /* never smuggle a line (or a NUL-cut one) */
            if (((unsigned char)*q < 0x20 && *q != '\t') || *q == 0x7f) return TN_EINVAL;
        if (tn__http_ieq(h, nl, "content-length") || tn__http_ieq(h, nl, "transfer-encoding")) return TN_EINVAL;
        if (tn__http_ieq(h, nl, "host")) {
            tn__free(fe->host_hdr);
            if (!vl || !tn__http_valid_host(v, vl)) return TN_EINVAL;
            if (!(fe->host_hdr = tn__strndup(fe->cl->loop, v, vl))) return TN_ENOMEM;
            continue;
        }
        if (tn__http_ieq(h, nl, "user-agent")) fe->user_agent = 1;
        memcpy(fe->hdrs + fe->hdrs_len, h, nl);
        memcpy(fe->hdrs + fe->hdrs_len + nl, ": ", 2);
        memcpy(fe->hdrs + fe->hdrs_len + nl + 2, v, vl);
        memcpy(fe->hdrs + fe->hdrs_len + nl + 2 + vl, "\r\n", 2);
        fe->hdrs_len += nl + vl + 4;
    }
    return 0;
}

tn_future *tn_http_fetch(tn_http_client *c, const char *url, const tn_http_fetch_opts *opts) {
    tn_future *f = tn_future_new(c->loop);
    tn__fetch *fe = NULL;
    int rc = 0;
    if (f && (fe = c->fetch_free) != NULL) { /* a done one: no allocation */
        c->fetch_free = fe->next;
        c->nfetch_free--;
    } else if (f) {
        fe = (tn__fetch *)tn__malloc(c->loop, sizeof *fe);
    }
    if (!fe) {
        /* The body given by reference is ours from the call on. */
        if (opts && opts->body && opts->body_free) opts->body_free((void *)(uintptr_t)opts->body);
        if (f) tn_future_fail(f, TN_ENOMEM);
        return f;
    }
    memset(fe, 0, sizeof *fe);
    fe->cl = c;
    fe->all_next = c->fetches;
    if (c->fetches) c->fetches->all_prev = fe;
    c->fetches = fe;
    c->nfetches++;
    fe->start_ns = tn__clock_ns();
    if (opts) fe->opts = *opts;
    if (!fe->opts.connect_timeout_ms) fe->opts.connect_timeout_ms = c->opts.connect_timeout_ms;
    if (!fe->opts.request_timeout_ms) fe->opts.request_timeout_ms = c->opts.request_timeout_ms;
    if (!fe->opts.queue_timeout_ms) fe->opts.queue_timeout_ms = fe->opts.request_timeout_ms;
    if (!fe->opts.max_redirects) fe->opts.max_redirects = 5;
    if (!fe->opts.max_body_bytes) fe->opts.max_body_bytes = c->opts.max_body_bytes;
    if (fe->opts.body_free) {
        fe->body = fe->opts.body; /* by reference: freed with the fetch */
        if (!fe->body) fe->opts.body_len = 0;
    } else if (fe->opts.body_len) {
        char *copy = tn__strndup(fe->cl->loop, fe->opts.body ? fe->opts.body : "", fe->opts.body_len);
        fe->body = copy;
        if (!copy) rc = TN_ENOMEM;
    }
    {
        const char *m = fe->opts.method ? fe->opts.method : (fe->opts.body_len ? "POST" : "GET");
        const char *p;
        for (p = m; *p; p++)
            if (!tn__http_is_tchar((unsigned char)*p)) rc = TN_EINVAL;
        if (!*m) rc = TN_EINVAL;
        if (!rc && strlen(m) < sizeof fe->method_buf) fe->method = strcpy(fe->method_buf, m);
        else if (!rc && !(fe->method = tn__strndup(fe->cl->loop, m, strlen(m)))) rc = TN_ENOMEM;
    }
    if (!rc && fe->opts.headers) rc = tn__fetch_headers(fe, fe->opts.headers);
    fe->opts.method = NULL;
    fe->opts.body = NULL;
    fe->opts.headers = NULL;
    if (!rc) rc = tn__fetch_set_url(fe, url ? url : "");
    if (!rc && !(fe->resp = (tn_http_response *)tn__malloc(fe->cl->loop, sizeof *fe->resp))) rc = TN_ENOMEM;
    if (!rc) memset(fe->resp, 0, sizeof *fe->resp);
    if (!rc && !(fe->pool = tn__pool_for(c, fe->host, fe->port, fe->tls))) rc = TN_ENOMEM;
    if (rc) {
        tn_future_fail(f, rc);
        tn__fetch_free(fe);
        return f;
    }
    fe->f = f;
    tn_future_on_cancel(f, tn__fetch_cancelled, fe);
    tn__fetch_dispatch(fe);
    return f;
}

void tn_http_client_free(tn_http_client *c) {
    if (!c) return;
    c->closing = 1;
    while (c->fetches) tn__fetch_fail(c->fetches, TN_ECANCELLED); /* closes their connections */
    while (c->pools) {
        tn__hpool *p = c->pools;
        while (p->idle) tn__hconn_close(p->idle);
        c->pools = p->next;
#if TN__TLS
        if (p->tls_session) tn__tlsb_session_free(p->tls_session);
#endif
        tn__free(p->key);
        tn__free(p);
    }
#if TN__TLS
    if (c->tls) tn__tls_ctx_unref(c->tls);
#endif
    while (c->fetch_free) {
        tn__fetch *fe = c->fetch_free;
        c->fetch_free = fe->next;
        tn__free(fe);
    }
    tn__free(c);
}

int tn_http_fetch_sync(const char *url, const tn_http_fetch_opts *opts, tn_http_response **out) {
    tn_loop *l;
    tn_http_client *c;
    void *v = NULL;
    int rc;
    *out = NULL;
    /* Under TN_NO_MALLOC its own loop has no region: TN_EINVAL. A body
     * given by reference is ours in every case (see OWNERSHIP). */
    if ((rc = tn_loop_new(&l, NULL)) != 0 || (rc = tn_http_client_new(l, NULL, &c)) != 0) {
        if (opts && opts->body && opts->body_free) opts->body_free((void *)(uintptr_t)opts->body);
        tn_loop_free(l); /* NULL when tn_loop_new failed */
        return rc;
    }
    rc = tn_run_sync(l, tn_http_fetch(c, url, opts), 0, &v);
    *out = (tn_http_response *)v;
    tn_http_client_free(c);
    tn_loop_free(l);
    return rc;
}

#endif /* TN_NO_HTTP_CLIENT */

#ifdef __cplusplus
}
#endif
#endif /* TORNADO_IMPLEMENTATION_DONE */
#endif /* TORNADO_IMPLEMENTATION */

/*
MIT License

Copyright (c) 2026 The tornado.h authors

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
*/
