/* clearing-bench-lifecycle: what a sandbox costs on top of a plain gVisor container.
 *
 * Every round measures three operations twice, once through libclearing and once as the bare
 * Docker Engine API calls a plain `docker run --runtime runsc` would make, on the same engine
 * connection:
 *
 *   create   clr_sandbox_create          POST /containers/create + POST /containers/{id}/start
 *   exec     clr_exec_run of `true`       POST /containers/{id}/exec + hijacked /exec/{id}/start
 *                                          read to the end of the stream
 *   destroy  clr_sandbox_destroy          DELETE /containers/{id}?force=1
 *
 * The two sides alternate round by round (clearing round i, then raw round i), so drift in the
 * machine's load lands on both alike. Only the operation itself is inside the clock: checking
 * the outcome (the exit code of `true`) and cleaning up after a failure are not.
 *
 * A failed operation is reported on stderr and counted; the percentiles are over the operations
 * that succeeded, and the exit status is non-zero if anything failed or anything was left
 * behind. Every sandbox and container made here is removed, on failure and on SIGINT/SIGTERM
 * too (the current round is finished first; a second signal kills the process). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "clearing/cleanup.h"
#include "clearing/clearing.h"

#define MIN_ROUNDS 30
#define QUICK_ROUNDS 3
#define MAX_ROUNDS 100000
#define RAW_EXEC_TIMEOUT_MS 30000
/* How long to wait for the engine to record the exit code once the exec stream has ended. */
#define RAW_EXEC_SETTLE_MS 2000
#define RAW_NAME_PREFIX "clearing-bench-raw-"

enum { EXIT_OK = 0, EXIT_FAILED = 1, EXIT_USAGE = 2 };

enum op { OP_CREATE, OP_EXEC, OP_DESTROY, OP_COUNT };
enum side { SIDE_CLEARING, SIDE_RAW, SIDE_COUNT };

static const char *const op_names[OP_COUNT] = {"create", "exec", "destroy"};
static const char *const side_names[SIDE_COUNT] = {"clearing", "raw docker"};
static const char *const side_keys[SIDE_COUNT] = {"clearing", "raw_docker"};

/* The samples of one operation on one side, in milliseconds. */
struct series {
    double *ms;
    size_t n;
    unsigned failed;
};

/* Sandboxes or containers whose timed removal failed: retried once at the end. */
struct leftovers {
    char (*ids)[72];
    size_t n;
};

struct bench {
    clr_engine *eng;
    unsigned rounds;
    struct series s[OP_COUNT][SIDE_COUNT];
    unsigned failed_rounds[SIDE_COUNT];
    struct leftovers left[SIDE_COUNT];
};

/* Set by SIGINT/SIGTERM; also clr_exec_options.cancel, which wants an int. */
static volatile int interrupted;

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void record(struct bench *b, enum op op, enum side side, double ms)
{
    struct series *s = &b->s[op][side];
    s->ms[s->n++] = ms;
}

static void fail(struct bench *b, unsigned round, enum op op, enum side side, const char *why)
{
    b->s[op][side].failed++;
    fprintf(stderr, "round %u: %s %s failed: %s\n", round + 1, side_names[side], op_names[op],
            why);
}

static void keep_leftover(struct bench *b, enum side side, const char *id)
{
    struct leftovers *l = &b->left[side];
    snprintf(l->ids[l->n++], sizeof(l->ids[0]), "%s", id);
}

/* ---- A: through libclearing ---- */

/* Returns 0 when every operation of the round succeeded. */
static int clearing_round(struct bench *b, unsigned round)
{
    static const char *const argv[] = {"true", NULL};
    clr_sandbox_options so = CLR_SANDBOX_OPTIONS_INIT;
    clr_exec_options eo = CLR_EXEC_OPTIONS_INIT;
    eo.argv = argv;
    eo.cancel = &interrupted;
    clr_error err = CLR_ERROR_INIT;
    int rc = 0;

    clr_sandbox *sb = NULL;
    double t0 = now_ms();
    if (clr_sandbox_create(&sb, b->eng, &so, &err) < 0) {
        /* clr_sandbox_create leaves nothing behind when it fails. */
        fail(b, round, OP_CREATE, SIDE_CLEARING, err.message);
        return -1;
    }
    record(b, OP_CREATE, SIDE_CLEARING, now_ms() - t0);
    char id[CLR_SANDBOX_ID_MAX + 1];
    snprintf(id, sizeof(id), "%s", clr_sandbox_get_info(sb)->id);

    clr_exec_result res;
    t0 = now_ms();
    int erc = clr_exec_run(&res, b->eng, sb, &eo, &err);
    double t1 = now_ms();
    if (erc < 0) {
        fail(b, round, OP_EXEC, SIDE_CLEARING, err.message);
        rc = -1;
    } else if (res.status != CLR_EXEC_EXITED || res.exit_code != 0) {
        char why[700];
        snprintf(why, sizeof(why), "`true` ended %s, exit code %d%s%.512s",
                 clr_exec_status_name(res.status), res.exit_code, res.message[0] ? ": " : "",
                 res.message);
        fail(b, round, OP_EXEC, SIDE_CLEARING, why);
        rc = -1;
    } else {
        record(b, OP_EXEC, SIDE_CLEARING, t1 - t0);
    }
    if (erc == 0)
        clr_exec_result_clear(&res);
    clr_sandbox_free(sb);

    err = (clr_error)CLR_ERROR_INIT;
    t0 = now_ms();
    if (clr_sandbox_destroy(b->eng, id, "bench", NULL, &err) < 0) {
        fail(b, round, OP_DESTROY, SIDE_CLEARING, err.message);
        keep_leftover(b, SIDE_CLEARING, id);
        return -1;
    }
    record(b, OP_DESTROY, SIDE_CLEARING, now_ms() - t0);
    return rc;
}

/* ---- B: the same through raw Docker Engine API calls ---- */

/* One JSON call that must answer `expect` (or `also`, if not 0). Fills why on failure. */
static int call(clr_engine *eng, const char *method, const char *path, json_t *body,
                json_t **resp, int expect, int also, char *why, size_t why_len)
{
    clr_error err = CLR_ERROR_INIT;
    int st = clr_engine_call(eng, method, path, body, resp, &err);
    if (st == expect || (also && st == also))
        return 0;
    if (st >= 0 && err.code == CLR_E_NONE)
        snprintf(why, why_len, "%s %s answered %d, expected %d", method, path, st, expect);
    else
        snprintf(why, why_len, "%s", err.message);
    return -1;
}

/* Untimed removal of a container that a failed step left behind; 404 means it is gone. */
static int raw_remove(clr_engine *eng, const char *id_or_name, char *why, size_t why_len)
{
    char path[256];
    snprintf(path, sizeof(path), "/containers/%s?force=1", id_or_name);
    return call(eng, "DELETE", path, NULL, NULL, 204, 404, why, why_len);
}

static int raw_create(struct bench *b, const char *name, char *cid, size_t cid_len, char *why,
                      size_t why_len)
{
    char path[256];
    snprintf(path, sizeof(path), "/containers/create?name=%s", name);
    /* NetworkDisabled as clearing sets it: without it the engine prepares networking even
     * for NetworkMode none, which costs 60-80 ms here and would flatter clearing. */
    json_t *body = json_pack("{s:s, s:[s,s], s:b, s:{s:s, s:s}}", "Image", CLR_DEFAULT_IMAGE,
                             "Cmd", "sleep", "infinity", "NetworkDisabled", 1, "HostConfig",
                             "Runtime", "runsc", "NetworkMode", "none");
    json_t *resp = NULL;
    int rc = call(b->eng, "POST", path, body, &resp, 201, 0, why, why_len);
    json_decref(body);
    const char *id = json_string_value(json_object_get(resp, "Id"));
    if (rc == 0 && !id) {
        snprintf(why, why_len, "POST %s answered without an Id", path);
        rc = -1;
    }
    if (rc == 0)
        snprintf(cid, cid_len, "%s", id);
    json_decref(resp);
    if (rc < 0)
        return -1;
    snprintf(path, sizeof(path), "/containers/%s/start", cid);
    return call(b->eng, "POST", path, NULL, NULL, 204, 304, why, why_len);
}

/* Starts `true` with the exec stream attached and reads the stream to its end. */
static int raw_exec(struct bench *b, const char *cid, char *eid, size_t eid_len, char *why,
                    size_t why_len)
{
    char path[256];
    snprintf(path, sizeof(path), "/containers/%s/exec", cid);
    json_t *body = json_pack("{s:b, s:b, s:[s]}", "AttachStdout", 1, "AttachStderr", 1, "Cmd",
                             "true");
    json_t *resp = NULL;
    int rc = call(b->eng, "POST", path, body, &resp, 201, 0, why, why_len);
    json_decref(body);
    const char *id = json_string_value(json_object_get(resp, "Id"));
    if (rc == 0 && !id) {
        snprintf(why, why_len, "POST %s answered without an Id", path);
        rc = -1;
    }
    if (rc == 0)
        snprintf(eid, eid_len, "%s", id);
    json_decref(resp);
    if (rc < 0)
        return -1;

    clr_error err = CLR_ERROR_INIT;
    clr_engine_stream *s = NULL;
    snprintf(path, sizeof(path), "/exec/%s/start", eid);
    body = json_pack("{s:b, s:b}", "Detach", 0, "Tty", 0);
    rc = clr_engine_hijack(&s, b->eng, path, body, &err);
    json_decref(body);
    if (rc < 0) {
        snprintf(why, why_len, "%s", err.message);
        return -1;
    }
    double deadline = now_ms() + RAW_EXEC_TIMEOUT_MS;
    uint8_t buf[16384];
    for (;;) {
        double left = deadline - now_ms();
        if (interrupted || left <= 0) {
            snprintf(why, why_len, "%s", interrupted ? "interrupted"
                                                     : "the exec stream did not end within 30 s");
            rc = -1;
            break;
        }
        ssize_t n = clr_engine_stream_read(s, buf, sizeof(buf), (int)left, &err);
        if (n == 0)
            break;
        if (n == -1) {
            snprintf(why, why_len, "%s", err.message);
            rc = -1;
            break;
        }
    }
    clr_engine_stream_free(s);
    return rc;
}

/* Outside the clock: did `true` really run and exit 0? */
static int raw_exec_check(struct bench *b, const char *eid, char *why, size_t why_len)
{
    char path[256];
    snprintf(path, sizeof(path), "/exec/%s/json", eid);
    double deadline = now_ms() + RAW_EXEC_SETTLE_MS;
    for (;;) {
        json_t *resp = NULL;
        if (call(b->eng, "GET", path, NULL, &resp, 200, 0, why, why_len) < 0) {
            json_decref(resp);
            return -1;
        }
        bool running = json_is_true(json_object_get(resp, "Running"));
        json_t *code = json_object_get(resp, "ExitCode");
        json_int_t exit_code = json_is_integer(code) ? json_integer_value(code) : -1;
        json_decref(resp);
        if (!running && exit_code == 0)
            return 0;
        if (!running || now_ms() >= deadline) {
            snprintf(why, why_len, "`true` %s, exit code %" JSON_INTEGER_FORMAT,
                     running ? "was still running after its stream ended" : "failed", exit_code);
            return -1;
        }
        nanosleep(&(struct timespec){.tv_nsec = 10 * 1000 * 1000}, NULL);
    }
}

static int raw_round(struct bench *b, unsigned round)
{
    char name[64], cid[72] = "", eid[72] = "", why[1100];
    int rc = 0;
    snprintf(name, sizeof(name), RAW_NAME_PREFIX "%ld-%u", (long)getpid(), round + 1);

    double t0 = now_ms();
    if (raw_create(b, name, cid, sizeof(cid), why, sizeof(why)) < 0) {
        fail(b, round, OP_CREATE, SIDE_RAW, why);
        /* It may exist even so (created but not started, or the answer was lost): by name. */
        if (raw_remove(b->eng, name, why, sizeof(why)) < 0) {
            fprintf(stderr, "round %u: removing raw container %s: %s\n", round + 1, name, why);
            keep_leftover(b, SIDE_RAW, name);
        }
        return -1;
    }
    record(b, OP_CREATE, SIDE_RAW, now_ms() - t0);

    t0 = now_ms();
    if (raw_exec(b, cid, eid, sizeof(eid), why, sizeof(why)) < 0) {
        fail(b, round, OP_EXEC, SIDE_RAW, why);
        rc = -1;
    } else {
        double ms = now_ms() - t0;
        if (raw_exec_check(b, eid, why, sizeof(why)) < 0) {
            fail(b, round, OP_EXEC, SIDE_RAW, why);
            rc = -1;
        } else {
            record(b, OP_EXEC, SIDE_RAW, ms);
        }
    }

    char path[256];
    snprintf(path, sizeof(path), "/containers/%s?force=1", cid);
    t0 = now_ms();
    if (call(b->eng, "DELETE", path, NULL, NULL, 204, 0, why, sizeof(why)) < 0) {
        fail(b, round, OP_DESTROY, SIDE_RAW, why);
        keep_leftover(b, SIDE_RAW, cid);
        return -1;
    }
    record(b, OP_DESTROY, SIDE_RAW, now_ms() - t0);
    return rc;
}

/* Second chance for what a failed destroy left; returns how many are still there. */
static unsigned remove_leftovers(struct bench *b)
{
    unsigned still = 0;
    for (size_t i = 0; i < b->left[SIDE_CLEARING].n; i++) {
        const char *id = b->left[SIDE_CLEARING].ids[i];
        clr_error err = CLR_ERROR_INIT;
        if (clr_sandbox_destroy(b->eng, id, "bench", NULL, &err) < 0) {
            fprintf(stderr, "left behind: sandbox %s (%s); remove it with `clearing rm %s`\n", id,
                    err.message, id);
            still++;
        }
    }
    for (size_t i = 0; i < b->left[SIDE_RAW].n; i++) {
        const char *id = b->left[SIDE_RAW].ids[i];
        char why[1100];
        if (raw_remove(b->eng, id, why, sizeof(why)) < 0) {
            fprintf(stderr, "left behind: container %s (%s); remove it with `docker rm -f %s`\n",
                    id, why, id);
            still++;
        }
    }
    return still;
}

/* ---- figures ---- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest rank: the smallest sample with at least p% of the samples at or below it. NAN if
 * there are none. The series must be sorted. */
static double percentile(const struct series *s, unsigned p)
{
    if (s->n == 0)
        return NAN;
    size_t rank = (p * s->n + 99) / 100;
    if (rank < 1)
        rank = 1;
    return s->ms[rank - 1];
}

struct row {
    double p50[SIDE_COUNT], p95[SIDE_COUNT], p99[SIDE_COUNT];
    double ratio; /* clearing p50 / raw p50; NAN if either is missing */
};

static struct row row_of(struct bench *b, enum op op)
{
    struct row r;
    for (int sd = 0; sd < SIDE_COUNT; sd++) {
        r.p50[sd] = percentile(&b->s[op][sd], 50);
        r.p95[sd] = percentile(&b->s[op][sd], 95);
        r.p99[sd] = percentile(&b->s[op][sd], 99);
    }
    r.ratio = r.p50[SIDE_RAW] > 0 ? r.p50[SIDE_CLEARING] / r.p50[SIDE_RAW] : NAN;
    return r;
}

static void cell(double v, int width)
{
    if (isnan(v))
        printf(" %*s |", width, "-");
    else
        printf(" %*.1f |", width, v);
}

static void print_table(struct bench *b)
{
    printf("lifecycle: %u rounds, clearing and raw docker interleaved; image %s, runtime runsc, "
           "engine API %s\n",
           b->rounds, CLR_DEFAULT_IMAGE, clr_engine_api_version(b->eng));
    printf("failed rounds: clearing %u, raw docker %u\n\n", b->failed_rounds[SIDE_CLEARING],
           b->failed_rounds[SIDE_RAW]);
    printf("%-9s | %12s | %12s | %12s | %14s | %14s | %14s | %9s\n", "operation",
           "clearing p50", "clearing p95", "clearing p99", "raw docker p50", "raw docker p95",
           "raw docker p99", "ratio p50");
    printf("----------+--------------+--------------+--------------+----------------+-------------"
           "---+----------------+----------\n");
    for (int op = 0; op < OP_COUNT; op++) {
        struct row r = row_of(b, (enum op)op);
        printf("%-9s |", op_names[op]);
        cell(r.p50[SIDE_CLEARING], 12);
        cell(r.p95[SIDE_CLEARING], 12);
        cell(r.p99[SIDE_CLEARING], 12);
        cell(r.p50[SIDE_RAW], 14);
        cell(r.p95[SIDE_RAW], 14);
        cell(r.p99[SIDE_RAW], 14);
        if (isnan(r.ratio))
            printf(" %9s\n", "-");
        else
            printf(" %8.2fx\n", r.ratio);
    }
    printf("(milliseconds; percentiles by nearest rank over the operations that succeeded)\n\n");
    /* One line per row for scripts: grep '^BENCH lifecycle '. */
    for (int op = 0; op < OP_COUNT; op++) {
        struct row r = row_of(b, (enum op)op);
        printf("BENCH lifecycle op=%s clearing_p50_ms=%.1f clearing_p95_ms=%.1f "
               "clearing_p99_ms=%.1f raw_p50_ms=%.1f raw_p95_ms=%.1f raw_p99_ms=%.1f "
               "ratio_p50=%.2f clearing_n=%zu raw_n=%zu clearing_failed=%u raw_failed=%u\n",
               op_names[op], r.p50[SIDE_CLEARING], r.p95[SIDE_CLEARING], r.p99[SIDE_CLEARING],
               r.p50[SIDE_RAW], r.p95[SIDE_RAW], r.p99[SIDE_RAW], r.ratio, b->s[op][SIDE_CLEARING].n, b->s[op][SIDE_RAW].n,
               b->s[op][SIDE_CLEARING].failed, b->s[op][SIDE_RAW].failed);
    }
}

/* Milliseconds rounded to the microsecond, or null when there is no figure. */
static json_t *ms_json(double v)
{
    return isnan(v) ? json_null() : json_real(round(v * 1000.0) / 1000.0);
}

static json_t *side_json(const struct series *s, double p50, double p95, double p99)
{
    json_t *samples = json_array();
    for (size_t i = 0; i < s->n; i++)
        json_array_append_new(samples, ms_json(s->ms[i]));
    return json_pack("{s:o, s:o, s:o, s:I, s:i, s:o}", "p50_ms", ms_json(p50), "p95_ms",
                     ms_json(p95), "p99_ms", ms_json(p99), "n", (json_int_t)s->n, "failed", (int)s->failed, "samples_ms", samples);
}

static void print_json(struct bench *b, unsigned left_behind)
{
    json_t *ops = json_object();
    for (int op = 0; op < OP_COUNT; op++) {
        struct row r = row_of(b, (enum op)op);
        json_t *o = json_object();
        for (int sd = 0; sd < SIDE_COUNT; sd++)
            json_object_set_new(o, side_keys[sd],
                                side_json(&b->s[op][sd], r.p50[sd], r.p95[sd], r.p99[sd]));
        json_object_set_new(o, "ratio_p50",
                            isnan(r.ratio) ? json_null() : json_real(round(r.ratio * 1000) / 1000));
        json_object_set_new(ops, op_names[op], o);
    }
    json_t *j = json_pack("{s:s, s:i, s:s, s:s, s:s, s:{s:i, s:i}, s:i, s:s, s:s, s:o}",
                          "benchmark", "lifecycle", "rounds", (int)b->rounds, "image",
                          CLR_DEFAULT_IMAGE, "runtime", "runsc", "engine_api",
                          clr_engine_api_version(b->eng), "failed_rounds", "clearing",
                          (int)b->failed_rounds[SIDE_CLEARING], "raw_docker",
                          (int)b->failed_rounds[SIDE_RAW], "left_behind", (int)left_behind,
                          "unit", "ms", "percentile_method", "nearest-rank", "operations", ops);
    char *s = j ? json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(12))
                : NULL;
    if (s) {
        puts(s);
        free(s);
    } else {
        fprintf(stderr, "clearing-bench-lifecycle: cannot encode the JSON report\n");
    }
    json_decref(j);
}

/* ---- main ---- */

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: clearing-bench-lifecycle [--rounds N] [--quick] [--json]\n\n"
            "Measures create (create+start), exec of `true`, and destroy of a sandbox through\n"
            "libclearing, against the same through raw Docker Engine API calls (a plain runsc\n"
            "container running `sleep infinity`), interleaved round by round. Needs root, a\n"
            "running dockerd with runsc registered, the image " CLR_DEFAULT_IMAGE ", and\n"
            "CLEARING_AGENT pointing at clearing-agent (bench/run.sh sets it).\n\n"
            "  --rounds N   rounds to run (default %d; at least %d unless --quick)\n"
            "  --quick      smoke test: %d rounds by default, any number allowed\n"
            "  --json       print the figures (and every sample) as one JSON object\n"
            "\nExit status: 0 all went well, 1 an operation failed or something was left\n"
            "behind, 2 bad usage or the host is not ready.\n",
            MIN_ROUNDS, MIN_ROUNDS, QUICK_ROUNDS);
}

/* Fails early, with the fix, rather than with the same error in every round. */
static int preflight(clr_engine *eng, clr_error *err)
{
    if (geteuid() != 0)
        return clr_error_set(err, CLR_E_DENIED, EPERM,
                             "clearing mounts a tmpfs workspace per sandbox: run the benchmark as "
                             "root");
    bool have = false;
    if (clr_engine_has_runtime(eng, "runsc", &have, err) < 0)
        return -1;
    if (!have)
        return clr_error_set(err, CLR_E_UNAVAILABLE, 0,
                             "the runsc runtime is not registered with the Docker engine: run "
                             "scripts/setup.sh");
    int st = clr_engine_call(eng, "GET", "/images/" CLR_DEFAULT_IMAGE "/json", NULL, NULL, err);
    if (st == 404)
        return clr_error_set(err, CLR_E_NOT_FOUND, 0,
                             "image " CLR_DEFAULT_IMAGE " is missing: build it with "
                             "images/build.sh (scripts/setup.sh does)");
    return st == 200 ? 0 : -1;
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"rounds", required_argument, NULL, 'r'},
        {"quick", no_argument, NULL, 'q'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    uint64_t rounds = 0;
    bool quick = false, json = false;
    int c;
    while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        clr_error err = CLR_ERROR_INIT;
        switch (c) {
        case 'r':
            if (clr_parse_uint(&rounds, optarg, &err) < 0 || rounds == 0 || rounds > MAX_ROUNDS) {
                fprintf(stderr, "clearing-bench-lifecycle: --rounds '%s': expected 1..%d\n",
                        optarg, MAX_ROUNDS);
                return EXIT_USAGE;
            }
            break;
        case 'q': quick = true; break;
        case 'j': json = true; break;
        case 'h': usage(stdout); return EXIT_OK;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "clearing-bench-lifecycle: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return EXIT_USAGE;
    }
    if (rounds == 0)
        rounds = quick ? QUICK_ROUNDS : MIN_ROUNDS;
    /* A p95 over fewer than 30 samples is the maximum, not a percentile. */
    if (rounds < MIN_ROUNDS && !quick) {
        fprintf(stderr,
                "clearing-bench-lifecycle: --rounds %" PRIu64 " is below the minimum of %d "
                "(p95 needs it); use --quick for a smoke test\n",
                rounds, MIN_ROUNDS);
        return EXIT_USAGE;
    }

    struct bench b = {.rounds = (unsigned)rounds};
    bool oom = false;
    for (int sd = 0; sd < SIDE_COUNT; sd++) {
        for (int op = 0; op < OP_COUNT; op++) {
            b.s[op][sd].ms = calloc(rounds, sizeof(double));
            oom = oom || !b.s[op][sd].ms;
        }
        /* At most one leftover per side and round. */
        b.left[sd].ids = calloc(rounds, sizeof(b.left[sd].ids[0]));
        oom = oom || !b.left[sd].ids;
    }
    if (oom) {
        fprintf(stderr, "clearing-bench-lifecycle: out of memory\n");
        return EXIT_FAILED;
    }

    clr_error err = CLR_ERROR_INIT;
    clr_engine_options eo = CLR_ENGINE_OPTIONS_INIT;
    if (clr_engine_open(&b.eng, &eo, &err) < 0 || preflight(b.eng, &err) < 0) {
        fprintf(stderr, "clearing-bench-lifecycle: %s: %s\n", clr_error_code_name(err.code),
                err.message);
        clr_engine_free(b.eng);
        return EXIT_USAGE;
    }

    /* Stop after the current round, which still cleans up after itself; a second signal
     * kills the process (SA_RESETHAND). */
    struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_RESETHAND};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    unsigned done = 0;
    for (unsigned i = 0; i < b.rounds && !interrupted; i++) {
        size_t before[OP_COUNT][SIDE_COUNT];
        for (int op = 0; op < OP_COUNT; op++)
            for (int sd = 0; sd < SIDE_COUNT; sd++)
                before[op][sd] = b.s[op][sd].n;
        if (clearing_round(&b, i) < 0)
            b.failed_rounds[SIDE_CLEARING]++;
        if (raw_round(&b, i) < 0)
            b.failed_rounds[SIDE_RAW]++;
        done++;
        fprintf(stderr, "round %u/%u:", i + 1, b.rounds);
        for (int sd = 0; sd < SIDE_COUNT; sd++) {
            fprintf(stderr, "%s %s", sd ? " |" : "", side_names[sd]);
            for (int op = 0; op < OP_COUNT; op++) {
                const struct series *s = &b.s[op][sd];
                if (s->n > before[op][sd])
                    fprintf(stderr, " %s %.1f", op_names[op], s->ms[s->n - 1]);
                else
                    fprintf(stderr, " %s -", op_names[op]);
            }
        }
        fprintf(stderr, " (ms)\n");
    }
    if (interrupted)
        fprintf(stderr, "interrupted after %u of %u rounds\n", done, b.rounds);
    unsigned left_behind = remove_leftovers(&b);

    for (int op = 0; op < OP_COUNT; op++)
        for (int sd = 0; sd < SIDE_COUNT; sd++)
            qsort(b.s[op][sd].ms, b.s[op][sd].n, sizeof(double), cmp_double);
    b.rounds = done;
    if (json)
        print_json(&b, left_behind);
    else
        print_table(&b);

    bool failed = interrupted || left_behind > 0 || b.failed_rounds[SIDE_CLEARING] > 0 ||
                  b.failed_rounds[SIDE_RAW] > 0;
    clr_engine_free(b.eng);
    for (int op = 0; op < OP_COUNT; op++)
        for (int sd = 0; sd < SIDE_COUNT; sd++)
            free(b.s[op][sd].ms);
    for (int sd = 0; sd < SIDE_COUNT; sd++)
        free(b.left[sd].ids);
    return failed ? EXIT_FAILED : EXIT_OK;
}
