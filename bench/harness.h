/* bench/harness.h: what every C benchmark of clearing shares (bench_lifecycle, bench_api,
 * bench_audit). The harness owns:
 *
 *   harness.c         the exit statuses, SIGINT/SIGTERM, the clock, samples and their
 *                     nearest-rank percentiles, table cells and JSON figures, the common options
 *                     (--quick, --json, --help and counts such as --rounds), the host check
 *                     before the first round, and the removal of what a run left behind
 *   harness_raw.c     the baseline: bare Docker Engine API calls (create+start, exec read to the
 *                     end of its stream, the exit-code check, force removal) on a clr_engine
 *   harness_daemon.c  a `clearing serve` child in a temporary directory: start, wait until it
 *                     answers, stop, its log, and the removal of the directory
 *
 * Messages go to stderr prefixed with the program's name (bench_prog, set by bench_parse_args).
 * Nothing here allocates anything the caller must free unless its comment says so. */
#ifndef CLEARING_BENCH_HARNESS_H
#define CLEARING_BENCH_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include <jansson.h>

#include "clearing/clearing.h"

enum { BENCH_EXIT_OK = 0, BENCH_EXIT_FAILED = 1, BENCH_EXIT_USAGE = 2 };
/* bench_parse_args: the options are good, run the benchmark. */
#define BENCH_RUN (-1)

/* The program's name for messages ("clearing-bench-api"). */
extern const char *bench_prog;

/* Set by SIGINT/SIGTERM once bench_catch_signals ran; an int so that it can also be
 * clr_exec_options.cancel. */
extern volatile int bench_interrupted;

/* SIGINT and SIGTERM set bench_interrupted (the benchmark stops after the current round, which
 * still cleans up); a second one kills the process (SA_RESETHAND). SIGPIPE is ignored. */
void bench_catch_signals(void);

/* CLOCK_MONOTONIC in milliseconds. */
double bench_now_ms(void);
void bench_sleep_ms(long ms);

/* ---- samples ---- */

/* Samples of one measurement (the unit is the benchmark's), growing as needed. Zero-initialise;
 * bench_series_free releases v. */
struct bench_series {
    double *v;
    size_t n, cap;
    unsigned failed;
    double busy_ms; /* the time the samples' slices or blocks took, where that is measured */
};

/* Room for n samples, so that bench_series_add cannot fail below that. -1 when out of memory. */
int bench_series_reserve(struct bench_series *s, size_t n);
/* Appends v; -1 when out of memory (v is not added). */
int bench_series_add(struct bench_series *s, double v);
void bench_series_sort(struct bench_series *s);
void bench_series_free(struct bench_series *s);
/* Nearest rank over the sorted samples: the smallest sample with at least p% of the samples at
 * or below it (rank ceil(p/100 x n)). NAN if there are none. */
double bench_percentile(const struct bench_series *s, unsigned p);
/* Samples per second of busy time; NAN if no time was measured. */
double bench_rate(const struct bench_series *s);
/* a / b; NAN if b is not positive or a is NAN. */
double bench_ratio(double a, double b);

/* ---- output ---- */

/* One table cell " %*.*f |", or " - |" for NAN. */
void bench_cell(double v, int width, int decimals);
/* The header of a table of p50/p95/p99 on the clearing side and the raw docker side and their
 * ratio, what naming its first column. */
void bench_print_sides_header(const char *what);
/* One row of that table: p50, p95 and p99 of the clearing side ([0]) and the raw side ([1]),
 * and the ratio ("-" for NAN). */
void bench_print_sides_row(const char *name, const double p50[2], const double p95[2],
                           const double p99[2], double ratio);
/* v rounded to 1/scale (1000: three decimals), or null for NAN. A new reference. */
json_t *bench_num_json(double v, double scale);
/* Prints j indented, in insertion order, then releases it (j may be NULL: an error). */
void bench_print_json(json_t *j);

/* ---- options ---- */

enum bench_opt_kind { BENCH_OPT_COUNT, BENCH_OPT_STRING };

/* An option with an argument: a count of 1..max into *(uint64_t *)out, or a string into
 * *(const char **)out (pointing into argv). */
struct bench_opt {
    const char *name; /* without the dashes: "rounds" */
    enum bench_opt_kind kind;
    uint64_t max;
    void *out;
};

/* What every benchmark accepts besides its own options. */
struct bench_args {
    const char *prog;
    void (*usage)(FILE *f);
    const struct bench_opt *opts;
    size_t nopts;
    bool quick, json; /* --quick, --json */
};

/* Parses argv: the benchmark's options, --quick, --json and --help. Returns BENCH_RUN when the
 * benchmark should run, else the exit status main should return (after --help, or a usage
 * error already reported on stderr). Sets bench_prog. */
int bench_parse_args(struct bench_args *a, int argc, char **argv);
/* A count of 1..max from text; reports "--opt 'text': expected 1..max" and returns -1 if not. */
int bench_parse_count(const char *opt, const char *text, uint64_t max, uint64_t *out);
/* A p95 over fewer than min samples is the maximum: refuses rounds < min unless quick.
 * Returns 0, or -1 with the reason on stderr. */
int bench_check_rounds(uint64_t rounds, unsigned min, bool quick);

/* ---- the host ---- */

/* Opens the engine and checks root (why_root says what needs it), the runsc runtime and the
 * image CLR_DEFAULT_IMAGE, with the fix for each. Returns 0 with *eng open (the caller frees it
 * with clr_engine_free), or -1 with the reason on stderr and *eng NULL. */
int bench_open_engine(clr_engine **eng, const char *why_root);

/* Destroys a sandbox the run made (state_dir: the daemon's, or NULL for the library's own).
 * Returns 0, or 1 with a "left behind" line on stderr saying how to remove it. */
unsigned bench_remove_sandbox(clr_engine *eng, const char *id, const char *state_dir);
/* Force-removes a plain container by id or name (gone already is fine). Returns 0, or 1 with a
 * "left behind" line on stderr. */
unsigned bench_remove_container(clr_engine *eng, const char *id_or_name);
/* Removes the directory tree at dir, not descending into mounts. Returns 0, or 1 with a "left
 * behind" line on stderr. */
unsigned bench_remove_tree(const char *dir);

/* ---- the baseline: raw Docker Engine API calls (harness_raw.c) ---- */

/* One JSON call that must answer `expect` (or `also`, if not 0); *resp (if resp) receives the
 * answer, which the caller releases with json_decref. Returns 0, or -1 with why filled. */
int bench_raw_call(clr_engine *eng, const char *method, const char *path, json_t *body,
                   json_t **resp, int expect, int also, char *why, size_t why_len);
/* DELETE /containers/{id}?force=1, untimed; 404 (gone) counts as success. */
int bench_raw_remove(clr_engine *eng, const char *id_or_name, char *why, size_t why_len);
/* What `docker run -d --runtime runsc --network none IMAGE sleep infinity` asks for: create
 * (named name) and start. The container's id goes to cid. */
int bench_raw_create(clr_engine *eng, const char *name, char *cid, size_t cid_len, char *why,
                     size_t why_len);
/* Starts `true` with the exec stream attached and reads the stream to its end (30 s at most);
 * the exec's id goes to eid. */
int bench_raw_exec(clr_engine *eng, const char *cid, char *eid, size_t eid_len, char *why,
                   size_t why_len);
/* Outside the clock: did the exec eid really run and exit 0? Waits up to 2 s for the engine to
 * record its exit code. */
int bench_raw_exec_check(clr_engine *eng, const char *eid, char *why, size_t why_len);

/* ---- a daemon child (harness_daemon.c) ---- */

/* A `clearing serve` the benchmark runs, with its state, socket and log in dir. */
struct bench_daemon {
    char dir[64], sock[128], state[128], log[128];
    pid_t pid;
    bool reaped, failed, log_printed;
    int status; /* its wait status once reaped */
};

/* Makes the temporary directory /tmp/PREFIX.XXXXXX and the paths in it. Returns 0, or -1 with
 * the reason on stderr and d->dir empty. */
int bench_daemon_dir(struct bench_daemon *d, const char *prefix);
/* Forks `bin --state-dir STATE serve --socket SOCK ARGS...` in its own process group, with
 * CLEARING_AGENT=agent, its output in the log, and SIGTERM when the benchmark dies. */
int bench_daemon_start(struct bench_daemon *d, const char *bin, const char *agent,
                       const char *const *args, size_t nargs, char *why, size_t why_len);
/* Is the daemon gone (or was there none)? Reaps it and records how, once. */
bool bench_daemon_gone(struct bench_daemon *d);
/* "exited with status 1", "was killed by signal 9 (Killed)". */
void bench_describe_status(int st, char *out, size_t len);
/* Once: the last 4 KiB of the daemon's log on stderr. */
void bench_daemon_print_log(struct bench_daemon *d);
/* After a failed call: if the daemon is gone, says so (with its log) and sets d->failed. */
void bench_daemon_check(struct bench_daemon *d);
/* Asks ready(ctx) every 50 ms, once the socket exists, until it answers 1 (ready) or -1
 * (give up); it fills last (its last answer) for the timeout's message. 30 s at most. */
int bench_daemon_wait(struct bench_daemon *d, int (*ready)(void *ctx, char *last, size_t len),
                      void *ctx, char *why, size_t why_len);
/* SIGTERM, then SIGKILL if it does not stop within 15 s. Returns 0 if it exited with 0. */
int bench_daemon_stop(struct bench_daemon *d);
/* Removes the directory (after printing the log if the daemon failed). Returns what was left
 * behind (0 or 1). */
unsigned bench_daemon_remove_dir(struct bench_daemon *d);
/* An executable given by option, else by the environment variable env, else at rel from the
 * directory of this program; its absolute path goes to out (PATH_MAX). -1 with the reason. */
int bench_find_program(char *out, const char *given, const char *env, const char *rel,
                       const char *what);

#endif
