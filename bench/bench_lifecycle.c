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
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "harness.h"

#define MIN_ROUNDS 30
#define QUICK_ROUNDS 3
#define MAX_ROUNDS 100000
#define RAW_NAME_PREFIX "clearing-bench-raw-"

enum op { OP_CREATE, OP_EXEC, OP_DESTROY, OP_COUNT };
enum side { SIDE_CLEARING, SIDE_RAW, SIDE_COUNT };

static const char *const op_names[OP_COUNT] = {"create", "exec", "destroy"};
static const char *const side_names[SIDE_COUNT] = {"clearing", "raw docker"};
static const char *const side_keys[SIDE_COUNT] = {"clearing", "raw_docker"};

/* Sandboxes or containers whose timed removal failed: retried once at the end. */
struct leftovers {
    char (*ids)[72];
    size_t n;
};

struct bench {
    clr_engine *eng;
    unsigned rounds;
    struct bench_series s[OP_COUNT][SIDE_COUNT]; /* milliseconds */
    unsigned failed_rounds[SIDE_COUNT];
    struct leftovers left[SIDE_COUNT];
};

static void record(struct bench *b, enum op op, enum side side, double ms)
{
    /* Room for every round was reserved up front. */
    bench_series_add(&b->s[op][side], ms);
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
    eo.cancel = &bench_interrupted;
    clr_error err = CLR_ERROR_INIT;
    int rc = 0;

    clr_sandbox *sb = NULL;
    double t0 = bench_now_ms();
    if (clr_sandbox_create(&sb, b->eng, &so, &err) < 0) {
        /* clr_sandbox_create leaves nothing behind when it fails. */
        fail(b, round, OP_CREATE, SIDE_CLEARING, err.message);
        return -1;
    }
    record(b, OP_CREATE, SIDE_CLEARING, bench_now_ms() - t0);
    char id[CLR_SANDBOX_ID_MAX + 1];
    snprintf(id, sizeof(id), "%s", clr_sandbox_get_info(sb)->id);

    clr_exec_result res;
    t0 = bench_now_ms();
    int erc = clr_exec_run(&res, b->eng, sb, &eo, &err);
    double t1 = bench_now_ms();
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
    t0 = bench_now_ms();
    if (clr_sandbox_destroy(b->eng, id, "bench", NULL, &err) < 0) {
        fail(b, round, OP_DESTROY, SIDE_CLEARING, err.message);
        keep_leftover(b, SIDE_CLEARING, id);
        return -1;
    }
    record(b, OP_DESTROY, SIDE_CLEARING, bench_now_ms() - t0);
    return rc;
}

/* ---- B: the same through raw Docker Engine API calls (harness_raw.c) ---- */

static int raw_round(struct bench *b, unsigned round)
{
    char name[64], cid[72] = "", eid[72] = "", why[1100];
    int rc = 0;
    snprintf(name, sizeof(name), RAW_NAME_PREFIX "%ld-%u", (long)getpid(), round + 1);

    double t0 = bench_now_ms();
    if (bench_raw_create(b->eng, name, cid, sizeof(cid), why, sizeof(why)) < 0) {
        fail(b, round, OP_CREATE, SIDE_RAW, why);
        /* It may exist even so (created but not started, or the answer was lost): by name. */
        if (bench_raw_remove(b->eng, name, why, sizeof(why)) < 0) {
            fprintf(stderr, "round %u: removing raw container %s: %s\n", round + 1, name, why);
            keep_leftover(b, SIDE_RAW, name);
        }
        return -1;
    }
    record(b, OP_CREATE, SIDE_RAW, bench_now_ms() - t0);

    t0 = bench_now_ms();
    if (bench_raw_exec(b->eng, cid, eid, sizeof(eid), why, sizeof(why)) < 0) {
        fail(b, round, OP_EXEC, SIDE_RAW, why);
        rc = -1;
    } else {
        double ms = bench_now_ms() - t0;
        if (bench_raw_exec_check(b->eng, eid, why, sizeof(why)) < 0) {
            fail(b, round, OP_EXEC, SIDE_RAW, why);
            rc = -1;
        } else {
            record(b, OP_EXEC, SIDE_RAW, ms);
        }
    }

    char path[256];
    snprintf(path, sizeof(path), "/containers/%s?force=1", cid);
    t0 = bench_now_ms();
    if (bench_raw_call(b->eng, "DELETE", path, NULL, NULL, 204, 0, why, sizeof(why)) < 0) {
        fail(b, round, OP_DESTROY, SIDE_RAW, why);
        keep_leftover(b, SIDE_RAW, cid);
        return -1;
    }
    record(b, OP_DESTROY, SIDE_RAW, bench_now_ms() - t0);
    return rc;
}

/* Second chance for what a failed destroy left; returns how many are still there. */
static unsigned remove_leftovers(struct bench *b)
{
    unsigned still = 0;
    for (size_t i = 0; i < b->left[SIDE_CLEARING].n; i++)
        still += bench_remove_sandbox(b->eng, b->left[SIDE_CLEARING].ids[i], NULL);
    for (size_t i = 0; i < b->left[SIDE_RAW].n; i++)
        still += bench_remove_container(b->eng, b->left[SIDE_RAW].ids[i]);
    return still;
}

/* ---- figures ---- */

struct row {
    double p50[SIDE_COUNT], p95[SIDE_COUNT], p99[SIDE_COUNT];
    double ratio; /* clearing p50 / raw p50; NAN if either is missing */
};

static struct row row_of(struct bench *b, enum op op)
{
    struct row r;
    for (int sd = 0; sd < SIDE_COUNT; sd++) {
        r.p50[sd] = bench_percentile(&b->s[op][sd], 50);
        r.p95[sd] = bench_percentile(&b->s[op][sd], 95);
        r.p99[sd] = bench_percentile(&b->s[op][sd], 99);
    }
    r.ratio = r.p50[SIDE_RAW] > 0 ? r.p50[SIDE_CLEARING] / r.p50[SIDE_RAW] : NAN;
    return r;
}

static void print_table(struct bench *b)
{
    printf("lifecycle: %u rounds, clearing and raw docker interleaved; image %s, runtime runsc, "
           "engine API %s\n",
           b->rounds, CLR_DEFAULT_IMAGE, clr_engine_api_version(b->eng));
    printf("failed rounds: clearing %u, raw docker %u\n\n", b->failed_rounds[SIDE_CLEARING],
           b->failed_rounds[SIDE_RAW]);
    bench_print_sides_header("operation");
    for (int op = 0; op < OP_COUNT; op++) {
        struct row r = row_of(b, (enum op)op);
        bench_print_sides_row(op_names[op], r.p50, r.p95, r.p99, r.ratio);
    }
    printf("(milliseconds; percentiles by nearest rank over the operations that succeeded)\n\n");
    /* One line per row for scripts: grep '^BENCH lifecycle '. */
    for (int op = 0; op < OP_COUNT; op++) {
        struct row r = row_of(b, (enum op)op);
        printf("BENCH lifecycle op=%s clearing_p50_ms=%.1f clearing_p95_ms=%.1f "
               "clearing_p99_ms=%.1f raw_p50_ms=%.1f raw_p95_ms=%.1f raw_p99_ms=%.1f "
               "ratio_p50=%.2f clearing_n=%zu raw_n=%zu clearing_failed=%u raw_failed=%u\n",
               op_names[op], r.p50[SIDE_CLEARING], r.p95[SIDE_CLEARING], r.p99[SIDE_CLEARING],
               r.p50[SIDE_RAW], r.p95[SIDE_RAW], r.p99[SIDE_RAW], r.ratio,
               b->s[op][SIDE_CLEARING].n, b->s[op][SIDE_RAW].n,
               b->s[op][SIDE_CLEARING].failed, b->s[op][SIDE_RAW].failed);
    }
}

/* Milliseconds rounded to the microsecond, or null when there is no figure. */
static json_t *ms_json(double v)
{
    return bench_num_json(v, 1000);
}

static json_t *side_json(const struct bench_series *s, double p50, double p95, double p99)
{
    json_t *samples = json_array();
    for (size_t i = 0; i < s->n; i++)
        json_array_append_new(samples, ms_json(s->v[i]));
    return json_pack("{s:o, s:o, s:o, s:I, s:i, s:o}", "p50_ms", ms_json(p50), "p95_ms",
                     ms_json(p95), "p99_ms", ms_json(p99), "n", (json_int_t)s->n, "failed",
                     (int)s->failed, "samples_ms", samples);
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
                            bench_num_json(r.ratio, 1000));
        json_object_set_new(ops, op_names[op], o);
    }
    json_t *j = json_pack("{s:s, s:i, s:s, s:s, s:s, s:{s:i, s:i}, s:i, s:s, s:s, s:o}",
                          "benchmark", "lifecycle", "rounds", (int)b->rounds, "image",
                          CLR_DEFAULT_IMAGE, "runtime", "runsc", "engine_api",
                          clr_engine_api_version(b->eng), "failed_rounds", "clearing",
                          (int)b->failed_rounds[SIDE_CLEARING], "raw_docker",
                          (int)b->failed_rounds[SIDE_RAW], "left_behind", (int)left_behind,
                          "unit", "ms", "percentile_method", "nearest-rank", "operations", ops);
    bench_print_json(j);
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

/* One line on stderr per round: what each operation took on each side, or `-`. */
static void progress(const struct bench *b, unsigned i, size_t before[OP_COUNT][SIDE_COUNT])
{
    fprintf(stderr, "round %u/%u:", i + 1, b->rounds);
    for (int sd = 0; sd < SIDE_COUNT; sd++) {
        fprintf(stderr, "%s %s", sd ? " |" : "", side_names[sd]);
        for (int op = 0; op < OP_COUNT; op++) {
            const struct bench_series *s = &b->s[op][sd];
            if (s->n > before[op][sd])
                fprintf(stderr, " %s %.1f", op_names[op], s->v[s->n - 1]);
            else
                fprintf(stderr, " %s -", op_names[op]);
        }
    }
    fprintf(stderr, " (ms)\n");
}

/* The rounds, clearing then raw docker; returns how many ran. */
static unsigned run_rounds(struct bench *b)
{
    unsigned done = 0;
    for (unsigned i = 0; i < b->rounds && !bench_interrupted; i++) {
        size_t before[OP_COUNT][SIDE_COUNT];
        for (int op = 0; op < OP_COUNT; op++)
            for (int sd = 0; sd < SIDE_COUNT; sd++)
                before[op][sd] = b->s[op][sd].n;
        if (clearing_round(b, i) < 0)
            b->failed_rounds[SIDE_CLEARING]++;
        if (raw_round(b, i) < 0)
            b->failed_rounds[SIDE_RAW]++;
        done++;
        progress(b, i, before);
    }
    return done;
}

/* Room for every sample and leftover of b->rounds rounds; -1 when out of memory. */
static int reserve(struct bench *b)
{
    for (int sd = 0; sd < SIDE_COUNT; sd++) {
        for (int op = 0; op < OP_COUNT; op++)
            if (bench_series_reserve(&b->s[op][sd], b->rounds) < 0)
                return -1;
        /* At most one leftover per side and round. */
        b->left[sd].ids = calloc(b->rounds, sizeof(b->left[sd].ids[0]));
        if (!b->left[sd].ids)
            return -1;
    }
    return 0;
}

static void free_bench(struct bench *b)
{
    clr_engine_free(b->eng);
    for (int sd = 0; sd < SIDE_COUNT; sd++) {
        for (int op = 0; op < OP_COUNT; op++)
            bench_series_free(&b->s[op][sd]);
        free(b->left[sd].ids);
    }
}

int main(int argc, char **argv)
{
    uint64_t rounds = 0;
    const struct bench_opt opts[] = {{"rounds", BENCH_OPT_COUNT, MAX_ROUNDS, &rounds}};
    struct bench_args a = {.prog = "clearing-bench-lifecycle", .usage = usage, .opts = opts,
                           .nopts = 1};
    int rc = bench_parse_args(&a, argc, argv);
    if (rc != BENCH_RUN)
        return rc;
    if (rounds == 0)
        rounds = a.quick ? QUICK_ROUNDS : MIN_ROUNDS;
    if (bench_check_rounds(rounds, MIN_ROUNDS, a.quick) < 0)
        return BENCH_EXIT_USAGE;

    struct bench b = {.rounds = (unsigned)rounds};
    if (reserve(&b) < 0) {
        fprintf(stderr, "clearing-bench-lifecycle: out of memory\n");
        free_bench(&b);
        return BENCH_EXIT_FAILED;
    }
    if (bench_open_engine(&b.eng, "clearing mounts a tmpfs workspace per sandbox") < 0) {
        free_bench(&b);
        return BENCH_EXIT_USAGE;
    }
    /* Stop after the current round, which still cleans up after itself. */
    bench_catch_signals();

    unsigned done = run_rounds(&b);
    if (bench_interrupted)
        fprintf(stderr, "interrupted after %u of %u rounds\n", done, b.rounds);
    unsigned left_behind = remove_leftovers(&b);

    for (int op = 0; op < OP_COUNT; op++)
        for (int sd = 0; sd < SIDE_COUNT; sd++)
            bench_series_sort(&b.s[op][sd]);
    b.rounds = done;
    if (a.json)
        print_json(&b, left_behind);
    else
        print_table(&b);

    bool failed = bench_interrupted || left_behind > 0 || b.failed_rounds[SIDE_CLEARING] > 0 ||
                  b.failed_rounds[SIDE_RAW] > 0;
    free_bench(&b);
    return failed ? BENCH_EXIT_FAILED : BENCH_EXIT_OK;
}
