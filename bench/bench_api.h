/* bench/bench_api.h: the parts of clearing-bench-api (bench_api.c) and what they share: the
 * figures of a run (struct bench), the daemon's REST client (bench_api_client.c), the /proc
 * readings of footprint and sandbox memory (bench_api_memory.c) and the report
 * (bench_api_report.c). Internal to the benchmark. */
#ifndef CLEARING_BENCH_API_H
#define CLEARING_BENCH_API_H

#include <curl/curl.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "harness.h"

#define MAX_DURATION_S 600
/* Concurrent clients in the throughput test, each with its own sandbox or container. */
#define MAX_CLIENTS 32
#define MAX_CLIENT_COUNTS 4
/* Throughput alternates sides in slices no longer than this, so drift lands on both. */
#define SLICE_MAX_S 5
#define MAX_SLICES ((MAX_DURATION_S + SLICE_MAX_S - 1) / SLICE_MAX_S)

enum side { SIDE_CLEARING, SIDE_RAW, SIDE_COUNT };

/* The sides' names in tables and JSON keys (bench_api_report.c). */
extern const char *const side_names[SIDE_COUNT];
extern const char *const side_keys[SIDE_COUNT];

/* The throughput of one side, summed over its slices. */
struct throughput {
    unsigned long execs, failed;
    double seconds;
    double slice_rate[MAX_SLICES]; /* execs/s of each slice */
    unsigned slices;
};

enum rss_point { RSS_EMPTY, RSS_IDLE, RSS_AFTER_LOAD, RSS_COUNT };
enum idle_point { IDLE_EMPTY, IDLE_SANDBOXES, IDLE_COUNT };

/* The daemon's footprint; NAN where it could not be read. */
struct footprint {
    double rss_kib[RSS_COUNT];
    double peak_rss_kib;
    double idle_cpu_pct[IDLE_COUNT];
};

/* What the engine runs for the idle sandboxes of one side, from /proc; NAN where unread. */
struct sandbox_memory {
    unsigned sandboxes, processes;
    double pss_kib, rss_kib; /* the sum over every process */
};

/* A client of the daemon: one libcurl handle, so that its connection is reused. */
struct api {
    CURL *curl;
    struct curl_slist *headers;
    char *buf;
    size_t len, cap;
    bool overflow;
    char curl_err[CURL_ERROR_SIZE];
};

struct bench {
    unsigned rounds, duration_s, idle_s;
    char clearing_bin[PATH_MAX], agent[PATH_MAX];
    struct bench_daemon d; /* the daemon and its temporary directory */
    char daemon_version[64];

    clr_engine *eng;
    struct api api; /* the main thread's client: setup, latency, cleanup */
    unsigned clients[MAX_CLIENT_COUNTS]; /* the client counts of the throughput part */
    unsigned client_counts;
    unsigned nsandboxes;                               /* the largest client count */
    char sandbox[MAX_CLIENTS][CLR_SANDBOX_ID_MAX + 1]; /* "" where there is none */
    bool sandbox_left[MAX_CLIENTS];                    /* the daemon did not remove it */
    char raw_name[MAX_CLIENTS][64];
    char raw_id[MAX_CLIENTS][72]; /* "" where there is none */

    bool setup_failed;
    unsigned rounds_done;
    struct bench_series lat[SIDE_COUNT]; /* exec latency, ms */
    struct throughput tp[MAX_CLIENT_COUNTS][SIDE_COUNT];
    unsigned slices_per_side;
    struct footprint fp;
    struct sandbox_memory mem[SIDE_COUNT];
    double host_mem_kib; /* MemTotal */
};

/* ---- bench_api_client.c: the daemon's REST API, with libcurl over its unix socket ---- */

/* Opens a client of the daemon at socket_path; api_close releases it. */
int api_open(struct api *a, const char *socket_path, char *why, size_t why_len);
void api_close(struct api *a);
/* One call: POST with body when body is not NULL, else method (GET or DELETE) without one.
 * Returns the HTTP status with the answer in a->buf (NUL-terminated, possibly empty), or -1
 * with why filled when the daemon could not be reached. */
int api_call(struct api *a, const char *method, const char *path, const char *body, char *why,
             size_t why_len);
/* The last answer ("" if none); owned by a, valid until its next call. */
const char *api_answer(const struct api *a);
/* For an unexpected status: the daemon's error message, or the start of its answer. */
void api_unexpected(const struct api *a, const char *method, const char *path, int status,
                    char *why, size_t why_len);
/* Runs `true` in the sandbox. t_ms (if not NULL) receives the time of the call alone; checking
 * the exec record comes after it. Fills why on failure. */
int api_exec_true(struct api *a, const char *sandbox, double *t_ms, char *why, size_t why_len);

/* ---- bench_api_memory.c: the daemon's footprint and the sandboxes' memory, from /proc ---- */

/* A "Name:   N kB" line of /proc/PID/status, in KiB; NAN if unreadable. */
double proc_status_kib(pid_t pid, const char *name);
/* CPU the daemon uses over b->idle_s seconds of nothing to do, in % of one core; NAN if the
 * window was interrupted or /proc could not be read. */
double idle_cpu(struct bench *b, const char *what);
/* Fills b->mem and b->host_mem_kib: the memory of every process the engine runs for the idle
 * sandboxes of each side. */
void sandbox_memory(struct bench *b);

/* ---- bench_api_report.c ---- */

/* The figures as tables and BENCH lines (b->lat sorted). */
void print_table(struct bench *b, unsigned left_behind);
/* The figures (and every latency sample) as one JSON object. */
void print_json(struct bench *b, unsigned left_behind);

#endif
