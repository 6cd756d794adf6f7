/* The benchmarks' common ground: signals, the clock, samples, output, options, the host check
 * and the removal of what a run made. See harness.h. */
#include "harness.h"

#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clearing/cleanup.h"

#define OPT_FIRST 1000
#define MAX_OPTS 16

const char *bench_prog = "clearing-bench";
volatile int bench_interrupted;

static void on_signal(int sig)
{
    (void)sig;
    bench_interrupted = 1;
}

void bench_catch_signals(void)
{
    struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_RESETHAND};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

double bench_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

void bench_sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000 * 1000};
    nanosleep(&ts, NULL);
}

/* ---- samples ---- */

int bench_series_reserve(struct bench_series *s, size_t n)
{
    if (n <= s->cap)
        return 0;
    double *nv = realloc(s->v, n * sizeof(double));
    if (!nv)
        return -1;
    s->v = nv;
    s->cap = n;
    return 0;
}

int bench_series_add(struct bench_series *s, double v)
{
    if (s->n == s->cap && bench_series_reserve(s, s->cap ? s->cap * 2 : 1024) < 0)
        return -1;
    s->v[s->n++] = v;
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void bench_series_sort(struct bench_series *s)
{
    if (s->n)
        qsort(s->v, s->n, sizeof(double), cmp_double);
}

void bench_series_free(struct bench_series *s)
{
    free(s->v);
    *s = (struct bench_series){0};
}

double bench_percentile(const struct bench_series *s, unsigned p)
{
    if (s->n == 0)
        return NAN;
    size_t rank = (p * s->n + 99) / 100;
    if (rank < 1)
        rank = 1;
    return s->v[rank - 1];
}

double bench_rate(const struct bench_series *s)
{
    return s->busy_ms > 0 ? (double)s->n * 1000.0 / s->busy_ms : NAN;
}

double bench_ratio(double a, double b)
{
    return b > 0 && !isnan(a) ? a / b : NAN;
}

/* ---- output ---- */

void bench_cell(double v, int width, int decimals)
{
    if (isnan(v))
        printf(" %*s |", width, "-");
    else
        printf(" %*.*f |", width, decimals, v);
}

void bench_print_sides_header(const char *what)
{
    printf("%-9s | %12s | %12s | %12s | %14s | %14s | %14s | %9s\n", what, "clearing p50",
           "clearing p95", "clearing p99", "raw docker p50", "raw docker p95", "raw docker p99",
           "ratio p50");
    printf("----------+--------------+--------------+--------------+----------------+-------------"
           "---+----------------+----------\n");
}

void bench_print_sides_row(const char *name, const double p50[2], const double p95[2],
                           const double p99[2], double ratio)
{
    printf("%-9s |", name);
    bench_cell(p50[0], 12, 1);
    bench_cell(p95[0], 12, 1);
    bench_cell(p99[0], 12, 1);
    bench_cell(p50[1], 14, 1);
    bench_cell(p95[1], 14, 1);
    bench_cell(p99[1], 14, 1);
    if (isnan(ratio))
        printf(" %9s\n", "-");
    else
        printf(" %8.2fx\n", ratio);
}

json_t *bench_num_json(double v, double scale)
{
    return isnan(v) ? json_null() : json_real(round(v * scale) / scale);
}

void bench_print_json(json_t *j)
{
    _cleanup_free_ char *s =
        j ? json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(12)) : NULL;
    if (s)
        puts(s);
    else
        fprintf(stderr, "%s: cannot encode the JSON report\n", bench_prog);
    json_decref(j);
}

/* ---- options ---- */

int bench_parse_count(const char *opt, const char *text, uint64_t max, uint64_t *out)
{
    clr_error err = CLR_ERROR_INIT;
    if (clr_parse_uint(out, text, &err) < 0 || *out == 0 || *out > max) {
        fprintf(stderr, "%s: %s '%s': expected 1..%" PRIu64 "\n", bench_prog, opt, text, max);
        return -1;
    }
    return 0;
}

/* One of the benchmark's own options, number i of a->opts. */
static int take_opt(const struct bench_args *a, size_t i, const char *arg)
{
    const struct bench_opt *o = &a->opts[i];
    if (o->kind == BENCH_OPT_STRING) {
        *(const char **)o->out = arg;
        return 0;
    }
    char name[64];
    snprintf(name, sizeof(name), "--%s", o->name);
    return bench_parse_count(name, arg, o->max, o->out);
}

int bench_parse_args(struct bench_args *a, int argc, char **argv)
{
    bench_prog = a->prog;
    struct option options[MAX_OPTS + 4];
    size_t n = 0;
    for (size_t i = 0; i < a->nopts && i < MAX_OPTS; i++)
        options[n++] = (struct option){a->opts[i].name, required_argument, NULL,
                                       OPT_FIRST + (int)i};
    options[n++] = (struct option){"quick", no_argument, NULL, 'q'};
    options[n++] = (struct option){"json", no_argument, NULL, 'j'};
    options[n++] = (struct option){"help", no_argument, NULL, 'h'};
    options[n] = (struct option){NULL, 0, NULL, 0};
    int c;
    while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        switch (c) {
        case 'q': a->quick = true; break;
        case 'j': a->json = true; break;
        case 'h': a->usage(stdout); return BENCH_EXIT_OK;
        default:
            if (c >= OPT_FIRST && (size_t)(c - OPT_FIRST) < a->nopts) {
                if (take_opt(a, (size_t)(c - OPT_FIRST), optarg) < 0)
                    return BENCH_EXIT_USAGE;
                break;
            }
            a->usage(stderr);
            return BENCH_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "%s: unexpected argument '%s'\n", bench_prog, argv[optind]);
        a->usage(stderr);
        return BENCH_EXIT_USAGE;
    }
    return BENCH_RUN;
}

int bench_check_rounds(uint64_t rounds, unsigned min, bool quick)
{
    if (rounds >= min || quick)
        return 0;
    fprintf(stderr,
            "%s: --rounds %" PRIu64 " is below the minimum of %u (p95 needs it); use --quick "
            "for a smoke test\n",
            bench_prog, rounds, min);
    return -1;
}

/* ---- the host ---- */

/* Fails early, with the fix, rather than with the same error in every round. */
static int preflight(clr_engine *eng, const char *why_root, clr_error *err)
{
    if (geteuid() != 0)
        return clr_error_set(err, CLR_E_DENIED, EPERM, "%s: run the benchmark as root",
                             why_root);
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

int bench_open_engine(clr_engine **eng, const char *why_root)
{
    clr_error err = CLR_ERROR_INIT;
    clr_engine_options eo = CLR_ENGINE_OPTIONS_INIT;
    *eng = NULL;
    if (clr_engine_open(eng, &eo, &err) < 0 || preflight(*eng, why_root, &err) < 0) {
        fprintf(stderr, "%s: %s: %s\n", bench_prog, clr_error_code_name(err.code), err.message);
        clr_engine_free(*eng);
        *eng = NULL;
        return -1;
    }
    return 0;
}

unsigned bench_remove_sandbox(clr_engine *eng, const char *id, const char *state_dir)
{
    clr_error err = CLR_ERROR_INIT;
    if (clr_sandbox_destroy(eng, id, "bench", state_dir, &err) == 0)
        return 0;
    if (state_dir)
        fprintf(stderr,
                "left behind: sandbox %s (%s); remove it with `clearing --state-dir %s rm "
                "--engine %s`\n",
                id, err.message, state_dir, id);
    else
        fprintf(stderr, "left behind: sandbox %s (%s); remove it with `clearing rm %s`\n", id,
                err.message, id);
    return 1;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    int rc = flag == FTW_DP ? rmdir(path) : unlink(path);
    if (rc < 0 && errno != ENOENT)
        fprintf(stderr, "removing %s: %s\n", path, strerror(errno));
    return 0;
}

unsigned bench_remove_tree(const char *dir)
{
    /* FTW_MOUNT: never into a workspace that is still mounted. */
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
    if (access(dir, F_OK) != 0)
        return 0;
    fprintf(stderr, "left behind: %s; remove it with `rm -rf %s` (unmount what is mounted "
                    "under it first)\n",
            dir, dir);
    return 1;
}
