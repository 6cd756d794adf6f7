/* clearing-bench-api: what the daemon (`clearing serve`) costs on top of the Docker Engine API.
 *
 * The benchmark starts its own daemon as a child process (temporary state directory and unix
 * socket, removed at the end) and measures, in one run:
 *
 *   latency     exec of `true` through the daemon's REST API (POST /v1/sandboxes/{id}/exec,
 *               libcurl over the unix socket, one reused connection) against a raw Docker exec
 *               of `true` (POST /containers/{id}/exec + hijacked /exec/{id}/start read to the
 *               end) in a plain runsc container, interleaved round by round
 *   throughput  8 clients (--clients: each of a list of counts, up to 32), each with its own
 *               sandbox (or plain container) and connection, running `true` back to back; the
 *               two sides alternate in slices of at most 5 s until each has had the whole
 *               duration; execs per second on each side
 *   footprint   the daemon's RSS (VmRSS) with 0 sandboxes and with 8 (the largest client
 *               count) idle ones, and the CPU time (utime + stime) it uses while idle, as a
 *               percentage of one core
 *   memory      the PSS and RSS per idle sandbox of everything the engine runs for it (its
 *               containerd shim and every process below it: runsc's gofer, sentry and stubs),
 *               on each side, and what that means for a host of this size
 *
 * Only the exec is inside the clock: checking the outcome (the exit code of `true`: the exec
 * record on the daemon's side, GET /exec/{id}/json on the raw side) is not, and for throughput
 * the raw checks run after the slice. One untimed exec per sandbox and container warms each up
 * before anything is measured.
 *
 * A failed operation is reported on stderr and counted; the figures are over what succeeded,
 * and the exit status is non-zero if anything failed or anything was left behind. Everything
 * made here (sandboxes, containers, the daemon and its temporary directory) is removed, on
 * failure and on SIGINT/SIGTERM too (the current round or slice is finished first; a second
 * signal kills the process, and the daemon, which is told by PR_SET_PDEATHSIG). */
#include <curl/curl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "bench_api.h"
#include "clearing/cleanup.h"

#define MIN_ROUNDS 30
#define DEFAULT_ROUNDS 50
#define QUICK_ROUNDS 3
#define MAX_ROUNDS 5000
#define DEFAULT_DURATION_S 20
#define QUICK_DURATION_S 3
#define DEFAULT_IDLE_S 10
#define QUICK_IDLE_S 3
#define MAX_IDLE_S 600
#define DEFAULT_CLIENTS 8
#define RAW_NAME_PREFIX "clearing-bench-api-raw-"
/* Sandboxes get no idle timeout and the longest lifetime, so that a long run (MAX_ROUNDS,
 * MAX_DURATION_S) does not lose them to the daemon's reaper. */
#define SANDBOX_REQUEST                                                                           \
    "{\"idle_timeout\":0,\"limits\":{\"lifetime\":3600},"                                        \
    "\"metadata\":{\"created_by\":\"clearing-bench-api\"}}"

/* ---- setup: sandboxes through the daemon, plain containers through the engine ---- */

static int setup(struct bench *b)
{
    char why[1100];
    int rc = 0;
    for (int i = 0; i < (int)b->nsandboxes && !bench_interrupted; i++) {
        int st = api_call(&b->api, "POST", "/v1/sandboxes", SANDBOX_REQUEST, why, sizeof(why));
        const char *id = NULL;
        json_t *j = NULL;
        if (st == 201) {
            j = json_loads(api_answer(&b->api), 0, NULL);
            id = json_string_value(json_object_get(j, "id"));
            if (id && clr_sandbox_id_valid(id))
                snprintf(b->sandbox[i], sizeof(b->sandbox[i]), "%s", id);
            else
                snprintf(why, sizeof(why), "POST /v1/sandboxes answered without a valid id");
        } else if (st > 0) {
            api_unexpected(&b->api, "POST", "/v1/sandboxes", st, why, sizeof(why));
        }
        json_decref(j);
        if (!b->sandbox[i][0]) {
            fprintf(stderr, "setup: creating sandbox %d through the daemon: %s\n", i + 1, why);
            bench_daemon_check(&b->d);
            return -1;
        }
        if (bench_raw_create(b->eng, b->raw_name[i], b->raw_id[i], sizeof(b->raw_id[i]), why,
                       sizeof(why)) < 0) {
            fprintf(stderr, "setup: creating raw container %s: %s\n", b->raw_name[i], why);
            return -1;
        }
    }
    /* One untimed exec on each: any start-up cost is not what this benchmark is about
     * (bench_lifecycle measures the first exec), and a broken sandbox shows here. */
    for (int i = 0; i < (int)b->nsandboxes && !bench_interrupted; i++) {
        char eid[72];
        if (api_exec_true(&b->api, b->sandbox[i], NULL, why, sizeof(why)) < 0) {
            fprintf(stderr, "setup: warm-up exec in sandbox %s: %s\n", b->sandbox[i], why);
            bench_daemon_check(&b->d);
            rc = -1;
        }
        if (bench_raw_exec(b->eng, b->raw_id[i], eid, sizeof(eid), why, sizeof(why)) < 0 ||
            bench_raw_exec_check(b->eng, eid, why, sizeof(why)) < 0) {
            fprintf(stderr, "setup: warm-up exec in raw container %s: %s\n", b->raw_name[i], why);
            rc = -1;
        }
    }
    return bench_interrupted ? -1 : rc;
}

/* ---- 1: exec latency, interleaved round by round ---- */

static void latency(struct bench *b)
{
    /* A dead daemon makes the rest meaningless: stop there (the cleanup still runs). */
    for (unsigned i = 0; i < b->rounds && !bench_interrupted && !b->d.failed; i++) {
        char why[1100], eid[72];
        double ms[SIDE_COUNT] = {NAN, NAN};

        if (api_exec_true(&b->api, b->sandbox[0], &ms[SIDE_CLEARING], why, sizeof(why)) < 0) {
            fprintf(stderr, "round %u: clearing exec failed: %s\n", i + 1, why);
            b->lat[SIDE_CLEARING].failed++;
            ms[SIDE_CLEARING] = NAN;
            bench_daemon_check(&b->d);
        } else {
            b->lat[SIDE_CLEARING].v[b->lat[SIDE_CLEARING].n++] = ms[SIDE_CLEARING];
        }

        double t0 = bench_now_ms();
        if (bench_raw_exec(b->eng, b->raw_id[0], eid, sizeof(eid), why, sizeof(why)) < 0) {
            fprintf(stderr, "round %u: raw docker exec failed: %s\n", i + 1, why);
            b->lat[SIDE_RAW].failed++;
        } else {
            double t = bench_now_ms() - t0;
            if (bench_raw_exec_check(b->eng, eid, why, sizeof(why)) < 0) {
                fprintf(stderr, "round %u: raw docker exec failed: %s\n", i + 1, why);
                b->lat[SIDE_RAW].failed++;
            } else {
                ms[SIDE_RAW] = t;
                b->lat[SIDE_RAW].v[b->lat[SIDE_RAW].n++] = t;
            }
        }
        b->rounds_done++;
        fprintf(stderr, "round %u/%u:", i + 1, b->rounds);
        for (int sd = 0; sd < SIDE_COUNT; sd++) {
            if (isnan(ms[sd]))
                fprintf(stderr, "%s %s exec -", sd ? " |" : "", side_names[sd]);
            else
                fprintf(stderr, "%s %s exec %.1f", sd ? " |" : "", side_names[sd], ms[sd]);
        }
        fprintf(stderr, " (ms)\n");
    }
}

/* ---- 2: throughput, N clients back to back, sides alternating by slice ---- */

/* Lines the clients of one slice up: all start together, and every clock has stopped before
 * the raw side's checks add calls to the engine. */
struct gate {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    int phase;  /* 0 wait, 1 run, 2 check */
    bool abort; /* the slice could not start: return at once */
    int timed;  /* clients whose clock has stopped */
};

struct worker {
    struct bench *b;
    enum side side;
    int idx;
    struct api api;  /* clearing: its own connection to the daemon */
    clr_engine *eng; /* raw: its own engine connection (a clr_engine is not thread-safe) */
    struct gate *gate;
    double slice_ms;
    /* this slice */
    double t_start, t_end;
    unsigned long execs, failed;
    char (*eids)[72]; /* raw: execs to check once the slice is over */
    size_t neids, cap_eids;
};

/* Waits for the gate to reach phase; false if the slice was called off. */
static bool gate_wait(struct gate *g, int phase)
{
    pthread_mutex_lock(&g->lock);
    while (g->phase < phase && !g->abort)
        pthread_cond_wait(&g->changed, &g->lock);
    bool go = !g->abort;
    pthread_mutex_unlock(&g->lock);
    return go;
}

static void gate_set(struct gate *g, int phase, bool abort)
{
    pthread_mutex_lock(&g->lock);
    g->phase = phase;
    g->abort = abort;
    pthread_cond_broadcast(&g->changed);
    pthread_mutex_unlock(&g->lock);
}

static void *worker_run(void *arg)
{
    struct worker *w = arg;
    char why[1100];
    w->execs = w->failed = 0;
    w->neids = 0;
    w->t_start = w->t_end = 0;
    if (!gate_wait(w->gate, 1))
        return NULL;
    w->t_start = bench_now_ms();
    double deadline = w->t_start + w->slice_ms;
    while (!bench_interrupted && bench_now_ms() < deadline) {
        int rc;
        if (w->side == SIDE_CLEARING) {
            rc = api_exec_true(&w->api, w->b->sandbox[w->idx], NULL, why, sizeof(why));
        } else {
            if (w->neids == w->cap_eids) {
                size_t cap = w->cap_eids ? w->cap_eids * 2 : 1024;
                void *p = realloc(w->eids, cap * sizeof(w->eids[0]));
                if (!p) {
                    snprintf(why, sizeof(why), "out of memory");
                    w->failed++;
                    break;
                }
                w->eids = p;
                w->cap_eids = cap;
            }
            rc = bench_raw_exec(w->eng, w->b->raw_id[w->idx], w->eids[w->neids],
                          sizeof(w->eids[0]), why, sizeof(why));
            if (rc == 0)
                w->neids++;
        }
        if (rc < 0) {
            /* Stop this client for the rest of the slice rather than spin on an error. */
            fprintf(stderr, "throughput: %s client %d: exec failed: %s\n",
                    side_names[w->side], w->idx + 1, why);
            w->failed++;
            break;
        }
        w->execs++;
    }
    w->t_end = bench_now_ms();
    pthread_mutex_lock(&w->gate->lock);
    w->gate->timed++;
    pthread_cond_broadcast(&w->gate->changed);
    pthread_mutex_unlock(&w->gate->lock);
    if (!gate_wait(w->gate, 2))
        return NULL;
    unsigned reported = 0;
    for (size_t i = 0; i < w->neids; i++) {
        if (bench_raw_exec_check(w->eng, w->eids[i], why, sizeof(why)) == 0)
            continue;
        if (reported++ == 0)
            fprintf(stderr, "throughput: raw docker client %d: exec failed: %s\n", w->idx + 1,
                    why);
        w->execs--;
        w->failed++;
    }
    return NULL;
}

/* One slice of one side; -1 if its threads could not be started. */
static int throughput_slice(struct bench *b, struct worker *ws, enum side side, double slice_ms,
                            unsigned ci)
{
    struct gate g = {.lock = PTHREAD_MUTEX_INITIALIZER, .changed = PTHREAD_COND_INITIALIZER};
    pthread_t th[MAX_CLIENTS];
    const int clients = (int)b->clients[ci];
    int started = 0;
    for (int i = 0; i < clients; i++) {
        ws[i].gate = &g;
        ws[i].slice_ms = slice_ms;
        if (pthread_create(&th[i], NULL, worker_run, &ws[i]) != 0)
            break;
        started++;
    }
    if (started < clients) {
        gate_set(&g, 0, true);
        for (int i = 0; i < started; i++)
            pthread_join(th[i], NULL);
        return -1;
    }
    gate_set(&g, 1, false);
    pthread_mutex_lock(&g.lock);
    while (g.timed < clients)
        pthread_cond_wait(&g.changed, &g.lock);
    pthread_mutex_unlock(&g.lock);
    gate_set(&g, 2, false);
    for (int i = 0; i < clients; i++)
        pthread_join(th[i], NULL);

    double t0 = ws[0].t_start, t1 = ws[0].t_end;
    unsigned long execs = 0, failed = 0;
    for (int i = 0; i < clients; i++) {
        t0 = fmin(t0, ws[i].t_start);
        t1 = fmax(t1, ws[i].t_end);
        execs += ws[i].execs;
        failed += ws[i].failed;
    }
    struct throughput *tp = &b->tp[ci][side];
    double secs = (t1 - t0) / 1000.0;
    tp->execs += execs;
    tp->failed += failed;
    tp->seconds += secs;
    double rate = secs > 0 ? (double)execs / secs : NAN;
    tp->slice_rate[tp->slices++] = rate;
    fprintf(stderr,
            "throughput, %d clients, slice %u/%u: %s %.1f execs/s (%lu execs in %.2f s, %lu "
            "failed)\n",
            clients, tp->slices, b->slices_per_side, side_names[side], rate, execs, secs, failed);
    return 0;
}

/* The throughput with b->clients[ci] clients. */
static void throughput_at(struct bench *b, unsigned ci)
{
    static struct worker ws[SIDE_COUNT][MAX_CLIENTS]; /* large: one libcurl error buffer each */
    memset(ws, 0, sizeof(ws));
    const int clients = (int)b->clients[ci];
    struct throughput *tp = b->tp[ci];
    char why[1100];
    bool ok = true;
    for (int sd = 0; sd < SIDE_COUNT; sd++) {
        for (int i = 0; i < clients; i++) {
            struct worker *w = &ws[sd][i];
            w->b = b;
            w->side = (enum side)sd;
            w->idx = i;
            if (sd == SIDE_CLEARING) {
                if (api_open(&w->api, b->d.sock, why, sizeof(why)) < 0) {
                    fprintf(stderr, "throughput: %s\n", why);
                    ok = false;
                }
            } else {
                clr_error err = CLR_ERROR_INIT;
                clr_engine_options eo = CLR_ENGINE_OPTIONS_INIT;
                if (clr_engine_open(&w->eng, &eo, &err) < 0) {
                    fprintf(stderr, "throughput: engine connection: %s\n", err.message);
                    ok = false;
                }
            }
        }
    }
    if (!ok) {
        tp[SIDE_CLEARING].failed++;
        tp[SIDE_RAW].failed++;
    }
    /* Slices of equal length, at most SLICE_MAX_S each, clearing first, then alternating. */
    unsigned slices = (b->duration_s + SLICE_MAX_S - 1) / SLICE_MAX_S;
    double slice_ms = b->duration_s * 1000.0 / slices;
    b->slices_per_side = slices;
    for (unsigned s = 0; ok && s < slices && !bench_interrupted && !b->d.failed; s++) {
        for (int sd = 0; sd < SIDE_COUNT && !bench_interrupted; sd++) {
            if (throughput_slice(b, ws[sd], (enum side)sd, slice_ms, ci) < 0) {
                fprintf(stderr, "throughput: cannot start %d threads\n", clients);
                tp[sd].failed++;
                ok = false;
                break;
            }
            if (sd == SIDE_CLEARING && tp[sd].failed)
                bench_daemon_check(&b->d);
            if (b->d.failed)
                break;
        }
    }
    if (tp[SIDE_CLEARING].failed)
        bench_daemon_check(&b->d);
    /* Closed before the idle measurement: an open connection is a thread in the daemon. */
    for (int i = 0; i < clients; i++) {
        api_close(&ws[SIDE_CLEARING][i].api);
        clr_engine_free(ws[SIDE_RAW][i].eng);
        free(ws[SIDE_RAW][i].eids);
    }
}

/* Each client count in turn, in the order given. */
static void throughput(struct bench *b)
{
    for (unsigned ci = 0; ci < b->client_counts && !bench_interrupted && !b->d.failed; ci++)
        throughput_at(b, ci);
}

/* ---- cleanup ---- */

/* Sandboxes through the daemon that made them, as a client would; those it did not remove are
 * marked in b->sandbox_left. */
static void cleanup_through_daemon(struct bench *b)
{
    char why[1100];
    for (int i = 0; i < (int)b->nsandboxes; i++) {
        if (!b->sandbox[i][0])
            continue;
        char path[128];
        snprintf(path, sizeof(path), "/v1/sandboxes/%s", b->sandbox[i]);
        int st = bench_daemon_gone(&b->d) ? -1
                                          : api_call(&b->api, "DELETE", path, NULL, why,
                                                     sizeof(why));
        if (st == 204 || st == 404)
            continue;
        if (st > 0)
            api_unexpected(&b->api, "DELETE", path, st, why, sizeof(why));
        else if (bench_daemon_gone(&b->d))
            snprintf(why, sizeof(why), "the daemon is gone");
        fprintf(stderr, "cleanup: removing sandbox %s through the daemon: %s; removing it "
                        "directly\n",
                b->sandbox[i], why);
        b->sandbox_left[i] = true;
    }
}

/* Any other container of this daemon (its owner label names its database), such as one whose
 * create answer was lost. Returns how many are still there. */
static unsigned cleanup_unknown(struct bench *b)
{
    unsigned still = 0;
    char owner[sizeof(b->d.state) + 32];
    snprintf(owner, sizeof(owner), "daemon:%s/clearing.db", b->d.state);
    _cleanup_free_ clr_sandbox_info *list = NULL;
    size_t n = 0;
    clr_error err = CLR_ERROR_INIT;
    if (clr_sandbox_list(&list, &n, b->eng, &err) < 0) {
        fprintf(stderr, "cleanup: listing sandboxes: %s\n", err.message);
        still++;
    }
    for (size_t i = 0; i < n; i++) {
        if (strcmp(list[i].owner, owner) != 0)
            continue;
        bool known = false;
        for (int k = 0; k < (int)b->nsandboxes; k++)
            known = known || (b->sandbox_left[k] && strcmp(b->sandbox[k], list[i].id) == 0);
        if (known)
            continue; /* already counted */
        if (bench_remove_sandbox(b->eng, list[i].id, b->d.state) > 0)
            still++;
        else
            fprintf(stderr, "cleanup: removed sandbox %s, which the daemon had not\n",
                    list[i].id);
    }
    return still;
}

/* Removes everything this run made; returns how many things are still there. */
static unsigned cleanup(struct bench *b)
{
    unsigned still = 0;
    cleanup_through_daemon(b);
    api_close(&b->api);
    if (bench_daemon_stop(&b->d) < 0)
        b->d.failed = true;

    /* What the daemon did not remove, directly with the library: the ones we know, then the
     * ones we do not. */
    if (b->eng) {
        for (int i = 0; i < (int)b->nsandboxes; i++)
            if (b->sandbox_left[i])
                still += bench_remove_sandbox(b->eng, b->sandbox[i], b->d.state);
        still += cleanup_unknown(b);
        /* Plain containers by name, which also covers one whose create answer was lost. */
        for (int i = 0; i < (int)b->nsandboxes; i++)
            if (b->raw_name[i][0])
                still += bench_remove_container(b->eng, b->raw_name[i]);
    }
    return still + bench_daemon_remove_dir(&b->d);
}

/* ---- main ---- */

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: clearing-bench-api [--rounds N] [--duration S] [--idle S] [--quick] [--json]\n"
            "                          [--clients N[,N...]] [--clearing PATH] [--agent PATH]\n\n"
            "Starts its own `clearing serve` and measures, against raw Docker Engine API execs\n"
            "in plain runsc containers (`sleep infinity`) in the same run: the latency of an exec\n"
            "of `true` through the daemon's REST API (interleaved round by round), the exec\n"
            "throughput of %d concurrent clients, the daemon's RSS and idle CPU, and the memory\n"
            "of an idle sandbox. Needs root,\n"
            "a running dockerd with runsc registered and the image " CLR_DEFAULT_IMAGE ".\n\n"
            "  --rounds N      latency rounds (default %d; at least %d unless --quick)\n"
            "  --duration S    throughput seconds per side (default %d, at most %d)\n"
            "  --idle S        seconds of idleness for the idle CPU (default %d, at most %d)\n"
            "  --quick         smoke test: %d rounds, %d s, %d s idle by default; any values\n"
            "  --clients LIST  throughput at each of these client counts, comma-separated, at\n"
            "                  most %d counts of 1..%d (default %d); as many sandboxes and\n"
            "                  containers as the largest count are created\n"
            "  --json          print the figures (and every latency sample) as one JSON object\n"
            "  --clearing PATH the clearing binary (default $CLEARING_BIN, else ../src/clearing\n"
            "                  next to this program, as in a build directory)\n"
            "  --agent PATH    clearing-agent for the daemon (default $CLEARING_AGENT, else\n"
            "                  ../agent/clearing-agent next to this program)\n"
            "\nExit status: 0 all went well, 1 an operation failed or something was left\n"
            "behind, 2 bad usage or the host is not ready.\n",
            DEFAULT_CLIENTS, DEFAULT_ROUNDS, MIN_ROUNDS, DEFAULT_DURATION_S, MAX_DURATION_S,
            DEFAULT_IDLE_S, MAX_IDLE_S, QUICK_ROUNDS, QUICK_DURATION_S, QUICK_IDLE_S,
            MAX_CLIENT_COUNTS, MAX_CLIENTS, DEFAULT_CLIENTS);
}

/* "1,8,32": at most MAX_CLIENT_COUNTS counts of 1..MAX_CLIENTS. */
static int parse_clients(const char *text, struct bench *b)
{
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", text);
    b->client_counts = 0;
    char *save = NULL;
    uint64_t v;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (b->client_counts == MAX_CLIENT_COUNTS) {
            fprintf(stderr, "clearing-bench-api: --clients: at most %d counts\n",
                    MAX_CLIENT_COUNTS);
            return -1;
        }
        if (bench_parse_count("--clients", t, MAX_CLIENTS, &v) < 0)
            return -1;
        b->clients[b->client_counts++] = (unsigned)v;
    }
    if (b->client_counts == 0) {
        fprintf(stderr, "clearing-bench-api: --clients '%s': expected N[,N...]\n", text);
        return -1;
    }
    return 0;
}


/* The options into b; BENCH_RUN, or the exit status. */
static int parse_options(struct bench *b, bool *json, int argc, char **argv)
{
    uint64_t rounds = 0, duration = 0, idle = 0;
    const char *clearing_opt = NULL, *agent_opt = NULL, *clients_opt = NULL;
    const struct bench_opt opts[] = {
        {"rounds", BENCH_OPT_COUNT, MAX_ROUNDS, &rounds},
        {"duration", BENCH_OPT_COUNT, MAX_DURATION_S, &duration},
        {"idle", BENCH_OPT_COUNT, MAX_IDLE_S, &idle},
        {"clients", BENCH_OPT_STRING, 0, &clients_opt},
        {"clearing", BENCH_OPT_STRING, 0, &clearing_opt},
        {"agent", BENCH_OPT_STRING, 0, &agent_opt},
    };
    struct bench_args a = {.prog = "clearing-bench-api", .usage = usage, .opts = opts,
                          .nopts = sizeof(opts) / sizeof(opts[0])};
    int rc = bench_parse_args(&a, argc, argv);
    if (rc != BENCH_RUN)
        return rc;
    *json = a.json;
    if (rounds == 0)
        rounds = a.quick ? QUICK_ROUNDS : DEFAULT_ROUNDS;
    if (duration == 0)
        duration = a.quick ? QUICK_DURATION_S : DEFAULT_DURATION_S;
    if (idle == 0)
        idle = a.quick ? QUICK_IDLE_S : DEFAULT_IDLE_S;
    if (bench_check_rounds(rounds, MIN_ROUNDS, a.quick) < 0)
        return BENCH_EXIT_USAGE;

    b->clients[0] = DEFAULT_CLIENTS;
    b->client_counts = 1;
    if (clients_opt && parse_clients(clients_opt, b) < 0)
        return BENCH_EXIT_USAGE;
    for (unsigned ci = 0; ci < b->client_counts; ci++)
        if (b->clients[ci] > b->nsandboxes)
            b->nsandboxes = b->clients[ci];
    b->rounds = (unsigned)rounds;
    b->duration_s = (unsigned)duration;
    b->idle_s = (unsigned)idle;
    if (bench_find_program(b->clearing_bin, clearing_opt, "CLEARING_BIN", "../src/clearing",
                           "clearing binary") < 0 ||
        bench_find_program(b->agent, agent_opt, "CLEARING_AGENT", "../agent/clearing-agent",
                           "agent") < 0)
        return BENCH_EXIT_USAGE;
    return BENCH_RUN;
}

/* For bench_daemon_wait: does the daemon answer GET /v1/health? Records its version. */
static int daemon_ready(void *ctx, char *last, size_t last_len)
{
    struct bench *b = ctx;
    int st = api_call(&b->api, "GET", "/v1/health", NULL, last, last_len);
    if (st == 200) {
        json_t *j = json_loads(api_answer(&b->api), 0, NULL);
        const char *v = json_string_value(json_object_get(j, "version"));
        snprintf(b->daemon_version, sizeof(b->daemon_version), "%s", v ? v : "?");
        json_decref(j);
        return 1;
    }
    if (st > 0)
        api_unexpected(&b->api, "GET", "/v1/health", st, last, last_len);
    return 0;
}

/* The daemon in its temporary directory, answering. -1 with the reason on stderr. */
static int start_daemon(struct bench *b)
{
    static const char *const args[] = {"--max-sandboxes", "64", "--max-execs", "64"};
    char why[1100];
    if (bench_daemon_dir(&b->d, "clearing-bench-api") < 0)
        return -1;
    if (api_open(&b->api, b->d.sock, why, sizeof(why)) < 0 ||
        bench_daemon_start(&b->d, b->clearing_bin, b->agent, args, 4, why, sizeof(why)) < 0 ||
        bench_daemon_wait(&b->d, daemon_ready, b, why, sizeof(why)) < 0) {
        fprintf(stderr, "clearing-bench-api: starting the daemon: %s\n", why);
        if (b->d.pid > 0 && !bench_interrupted)
            bench_daemon_print_log(&b->d);
        return -1;
    }
    fprintf(stderr, "daemon: clearing %s, pid %ld, socket %s\n", b->daemon_version,
            (long)b->d.pid, b->d.sock);
    return 0;
}

/* The four parts, in an order where each leaves the next what it needs. */
static void measure(struct bench *b)
{
    /* 3: the footprint of a daemon with nothing to manage. */
    b->fp.idle_cpu_pct[IDLE_EMPTY] = idle_cpu(b, "0 sandboxes");
    b->fp.rss_kib[RSS_EMPTY] = proc_status_kib(b->d.pid, "VmRSS");
    if (setup(b) < 0) {
        b->setup_failed = true;
    } else {
        b->fp.rss_kib[RSS_IDLE] = proc_status_kib(b->d.pid, "VmRSS");
        /* 4: the sandboxes idle and warmed up, before the load. */
        sandbox_memory(b);
        latency(b);
        if (!bench_interrupted && !b->d.failed)
            throughput(b);
        /* 3 again: the same sandboxes, idle now that they have seen work. */
        if (!bench_interrupted && !b->d.failed) {
            b->fp.idle_cpu_pct[IDLE_SANDBOXES] = idle_cpu(b, "idle sandboxes");
            b->fp.rss_kib[RSS_AFTER_LOAD] = proc_status_kib(b->d.pid, "VmRSS");
        }
    }
    /* A daemon that died has no /proc figures: they stay NAN. */
    b->fp.peak_rss_kib = proc_status_kib(b->d.pid, "VmHWM");
}

int main(int argc, char **argv)
{
    static struct bench b; /* large: the throughput slice rates */
    bool json = false;
    int rc = parse_options(&b, &json, argc, argv);
    if (rc != BENCH_RUN)
        return rc;
    b.fp = (struct footprint){.rss_kib = {NAN, NAN, NAN},
                              .peak_rss_kib = NAN,
                              .idle_cpu_pct = {NAN, NAN}};
    for (int sd = 0; sd < SIDE_COUNT; sd++) {
        if (bench_series_reserve(&b.lat[sd], b.rounds) < 0) {
            fprintf(stderr, "clearing-bench-api: out of memory\n");
            return BENCH_EXIT_FAILED;
        }
    }
    if (bench_open_engine(&b.eng, "clearing mounts a tmpfs workspace per sandbox") < 0)
        return BENCH_EXIT_USAGE;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "clearing-bench-api: cannot initialise libcurl\n");
        clr_engine_free(b.eng);
        return BENCH_EXIT_FAILED;
    }
    /* Stop after the current round or slice, which still cleans up. */
    bench_catch_signals();
    for (int i = 0; i < (int)b.nsandboxes; i++)
        snprintf(b.raw_name[i], sizeof(b.raw_name[i]), RAW_NAME_PREFIX "%ld-%d", (long)getpid(),
                 i + 1);

    bool failed = start_daemon(&b) < 0;
    if (!failed && !bench_interrupted)
        measure(&b);
    if (bench_interrupted)
        fprintf(stderr, "interrupted; cleaning up\n");
    unsigned left_behind = cleanup(&b);

    bool measured = !failed && !b.setup_failed;
    if (measured) {
        for (int sd = 0; sd < SIDE_COUNT; sd++)
            bench_series_sort(&b.lat[sd]);
        if (json)
            print_json(&b, left_behind);
        else
            print_table(&b, left_behind);
    }

    failed = failed || !measured || bench_interrupted || left_behind > 0 || b.d.failed;
    for (int sd = 0; sd < SIDE_COUNT; sd++) {
        failed = failed || b.lat[sd].failed > 0;
        for (unsigned ci = 0; ci < b.client_counts; ci++)
            failed = failed || b.tp[ci][sd].failed > 0;
        bench_series_free(&b.lat[sd]);
    }
    clr_engine_free(b.eng);
    curl_global_cleanup();
    return failed ? BENCH_EXIT_FAILED : BENCH_EXIT_OK;
}
