/*
 * trioecho load generator: the hot loop of `trioecho bench`, in C.
 *
 * Opens N TCP connections to an echo server speaking trioecho's protocol
 * (a greeting frame, then every message answered with message + "好"),
 * keeps D messages in flight on each, checks every reply (length, content,
 * suffix) and records its latency.  One thread, epoll, non-blocking
 * sockets.  Unlike the framer this does I/O: it is a benchmark tool, kept
 * apart from the sans-IO framer in its own extension module.
 */
#ifndef TRIOECHO_LOADGEN_H
#define TRIOECHO_LOADGEN_H

#include <stddef.h>
#include <stdint.h>

/* cffi:begin */

#define TB_FRAMING_LINE 0
#define TB_FRAMING_LEN 1
#define TB_FRAMING_RAW 2

/* Latency histogram: 16 linear sub-buckets per power of two of nanoseconds. */
#define TB_HIST_SUB 16
#define TB_HIST_BUCKETS 1024

typedef struct {
    const char *host;      /* IPv4 or IPv6 literal */
    int port;
    int connections;
    int depth;             /* messages in flight per connection (raw: 1) */
    size_t size;           /* payload bytes per message */
    int framing;           /* TB_FRAMING_* */
    int connect_timeout_ms;
} tb_config;

typedef struct {
    uint64_t sent;             /* messages sent */
    uint64_t received;         /* replies received and checked good */
    uint64_t errors;           /* bad replies, resets, early closes */
    uint64_t bytes_sent;
    uint64_t bytes_received;
    uint64_t max_latency_ns;
    uint64_t hist[1024];       /* TB_HIST_BUCKETS */
    int open_connections;
    char last_error[160];
} tb_stats;

typedef struct tb_bench tb_bench;

/* Connect every connection and read its greeting.  NULL on failure, with a
 * message in err. */
tb_bench *tb_open(const tb_config *config, char *err, size_t err_len);

/* Run the event loop for `millis` milliseconds, adding to *stats.
 * Returns the number of open connections. */
int tb_run(tb_bench *bench, int millis, tb_stats *stats);

/* Lower bound, in ns, of histogram bucket i. */
uint64_t tb_bucket_floor(int i);

/* The histogram bucket of a latency of `ns` nanoseconds. */
int tb_bucket_index(uint64_t ns);

/* End every open connection cleanly: send FIN (shutdown), then read and
 * discard until the server's end, for at most `millis` milliseconds, so no
 * unread bytes turn the close into a reset.  Returns the connections still
 * open at the deadline (tb_close closes them). */
int tb_finish(tb_bench *bench, int millis);

void tb_close(tb_bench *bench);

/* cffi:end */

#endif /* TRIOECHO_LOADGEN_H */
