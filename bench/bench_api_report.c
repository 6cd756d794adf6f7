/* clearing-bench-api's report: tables and BENCH lines, or one JSON object. See bench_api.h. */
#include <math.h>
#include <unistd.h>

#include <jansson.h>

#include "bench_api.h"

const char *const side_names[SIDE_COUNT] = {"clearing", "raw docker"};
const char *const side_keys[SIDE_COUNT] = {"clearing", "raw_docker"};

static double rate_of(const struct throughput *tp)
{
    return tp->seconds > 0 ? (double)tp->execs / tp->seconds : NAN;
}

static void cell_ratio(double v)
{
    if (isnan(v))
        printf(" %9s\n", "-");
    else
        printf(" %8.2fx\n", v);
}

static void value_row(const char *label, double v, int decimals, const char *unit)
{
    if (isnan(v))
        printf("%-27s | %12s\n", label, "-");
    else
        printf("%-27s | %8.*f %s\n", label, decimals, v, unit);
}

/* The exec latency percentiles of each side. */
struct latency_row {
    double p50[SIDE_COUNT], p95[SIDE_COUNT], p99[SIDE_COUNT];
    double ratio;
};

static struct latency_row latency_row(const struct bench *b)
{
    struct latency_row r;
    for (int sd = 0; sd < SIDE_COUNT; sd++) {
        r.p50[sd] = bench_percentile(&b->lat[sd], 50);
        r.p95[sd] = bench_percentile(&b->lat[sd], 95);
        r.p99[sd] = bench_percentile(&b->lat[sd], 99);
    }
    r.ratio = bench_ratio(r.p50[SIDE_CLEARING], r.p50[SIDE_RAW]);
    return r;
}

/* PSS or RSS (KiB) per idle sandbox of one side; NAN where nothing was read. */
static double per_sandbox(const struct sandbox_memory *m, double total)
{
    return m->sandboxes && m->processes ? total / m->sandboxes : NAN;
}

static void print_header(const struct bench *b, unsigned left_behind)
{
    printf("api: daemon clearing %s over a unix socket against raw docker exec; image %s, runtime "
           "runsc, engine API %s\n",
           b->daemon_version[0] ? b->daemon_version : "?", CLR_DEFAULT_IMAGE,
           clr_engine_api_version(b->eng));
    unsigned long tp_failed[SIDE_COUNT] = {0, 0};
    for (unsigned ci = 0; ci < b->client_counts; ci++)
        for (int sd = 0; sd < SIDE_COUNT; sd++)
            tp_failed[sd] += b->tp[ci][sd].failed;
    printf("failed: latency clearing %u, raw docker %u; throughput clearing %lu, raw docker %lu; "
           "left behind %u\n\n",
           b->lat[SIDE_CLEARING].failed, b->lat[SIDE_RAW].failed, tp_failed[SIDE_CLEARING],
           tp_failed[SIDE_RAW], left_behind);
}

static void print_latency(const struct bench *b)
{
    struct latency_row r = latency_row(b);
    bench_print_sides_header("latency");
    bench_print_sides_row("exec", r.p50, r.p95, r.p99, r.ratio);
    printf("(milliseconds, exec of `true`, %u rounds interleaved; percentiles by nearest rank over "
           "the execs that succeeded)\n\n",
           b->rounds_done);
}

static void print_throughput(const struct bench *b)
{
    printf("%-10s | %7s | %12s | %14s | %9s\n", "throughput", "clients", "clearing",
           "raw docker", "ratio");
    printf("-----------+---------+--------------+----------------+----------\n");
    for (unsigned ci = 0; ci < b->client_counts; ci++) {
        double rate[SIDE_COUNT];
        for (int sd = 0; sd < SIDE_COUNT; sd++)
            rate[sd] = rate_of(&b->tp[ci][sd]);
        printf("%-10s | %7u |", "execs/s", b->clients[ci]);
        bench_cell(rate[SIDE_CLEARING], 12, 1);
        bench_cell(rate[SIDE_RAW], 14, 1);
        cell_ratio(bench_ratio(rate[SIDE_CLEARING], rate[SIDE_RAW]));
    }
    printf("(each client back to back in its own sandbox or container; per client count %.1f s "
           "clearing, %.1f s raw docker, %u slice%s per side, alternating; exec of `true`; "
           "ratio below 1: clearing is slower)\n\n",
           b->tp[0][SIDE_CLEARING].seconds, b->tp[0][SIDE_RAW].seconds, b->slices_per_side,
           b->slices_per_side == 1 ? "" : "s");
}

static void print_footprint(const struct bench *b)
{
    const struct footprint *f = &b->fp;
    char rss_labels[RSS_COUNT][40], idle_labels[IDLE_COUNT][40];
    snprintf(rss_labels[RSS_EMPTY], sizeof(rss_labels[0]), "RSS, 0 sandboxes");
    snprintf(rss_labels[RSS_IDLE], sizeof(rss_labels[0]), "RSS, %u idle sandboxes",
             b->nsandboxes);
    snprintf(rss_labels[RSS_AFTER_LOAD], sizeof(rss_labels[0]), "RSS, %u idle, after the load",
             b->nsandboxes);
    snprintf(idle_labels[IDLE_EMPTY], sizeof(idle_labels[0]), "idle CPU, 0 sandboxes");
    snprintf(idle_labels[IDLE_SANDBOXES], sizeof(idle_labels[0]), "idle CPU, %u idle sandboxes",
             b->nsandboxes);
    printf("%-27s | %12s\n", "daemon footprint", "value");
    printf("----------------------------+-------------\n");
    for (int i = 0; i < RSS_COUNT; i++)
        value_row(rss_labels[i], f->rss_kib[i] / 1024.0, 1, "MiB");
    value_row("peak RSS (VmHWM)", f->peak_rss_kib / 1024.0, 1, "MiB");
    for (int i = 0; i < IDLE_COUNT; i++)
        value_row(idle_labels[i], f->idle_cpu_pct[i], 2, "%");
    printf("(VmRSS of the daemon process; idle CPU: utime+stime over %u s with nothing to do, in "
           "%% of one core, resolution %.1f%%)\n\n",
           b->idle_s, 100.0 / (double)sysconf(_SC_CLK_TCK) / (b->idle_s ? b->idle_s : 1));
}

/* Per idle sandbox, and what it means for this host: how many idle ones fit in its memory by
 * PSS (nothing else running), how many at clearing's default memory limit (what the sandboxes
 * may grow to), and the daemon's own share. */
static void print_memory(const struct bench *b)
{
    const double host = b->host_mem_kib;
    const struct sandbox_memory *mc = &b->mem[SIDE_CLEARING], *mr = &b->mem[SIDE_RAW];
    double pss_c = per_sandbox(mc, mc->pss_kib), pss_r = per_sandbox(mr, mr->pss_kib);
    printf("%-27s | %12s | %14s\n", "memory per idle sandbox", "clearing", "raw docker");
    printf("----------------------------+--------------+---------------\n");
    printf("%-27s |", "PSS (MiB)");
    bench_cell(pss_c / 1024.0, 12, 1);
    bench_cell(pss_r / 1024.0, 14, 1);
    printf("\n%-27s |", "RSS (MiB, shared counted)");
    bench_cell(per_sandbox(mc, mc->rss_kib) / 1024.0, 12, 1);
    bench_cell(per_sandbox(mr, mr->rss_kib) / 1024.0, 14, 1);
    printf("\n%-27s |", "processes");
    bench_cell(mc->sandboxes ? (double)mc->processes / mc->sandboxes : NAN, 12, 1);
    bench_cell(mr->sandboxes ? (double)mr->processes / mr->sandboxes : NAN, 14, 1);
    printf("\n%-27s |", "idle ones in host memory");
    bench_cell(floor(host / pss_c), 12, 0);
    bench_cell(floor(host / pss_r), 14, 0);
    const clr_limits defaults = CLR_LIMITS_INIT;
    const double limit_kib = (double)defaults.memory_bytes / 1024.0;
    printf("\n(%u idle sandboxes per side, warmed up: the containerd shim and every process "
           "below it, runsc's gofer, sentry and stubs; host MemTotal %.1f GiB; at clearing's "
           "default limit of %.0f MiB each, %.0f sandboxes fit; the daemon's RSS with %u "
           "sandboxes is %.3f%% of the host)\n\n",
           mc->sandboxes, host / 1048576.0, limit_kib / 1024.0, floor(host / (limit_kib + pss_c)),
           b->nsandboxes, b->fp.rss_kib[RSS_IDLE] / host * 100.0);
}

/* One line per measurement for scripts: grep '^BENCH api '. */
static void print_bench_lines(const struct bench *b)
{
    struct latency_row r = latency_row(b);
    printf("BENCH api op=exec clearing_p50_ms=%.1f clearing_p95_ms=%.1f clearing_p99_ms=%.1f "
           "raw_p50_ms=%.1f raw_p95_ms=%.1f raw_p99_ms=%.1f ratio_p50=%.2f clearing_n=%zu "
           "raw_n=%zu clearing_failed=%u raw_failed=%u\n",
           r.p50[SIDE_CLEARING], r.p95[SIDE_CLEARING], r.p99[SIDE_CLEARING], r.p50[SIDE_RAW],
           r.p95[SIDE_RAW], r.p99[SIDE_RAW], r.ratio, b->lat[SIDE_CLEARING].n, b->lat[SIDE_RAW].n,
           b->lat[SIDE_CLEARING].failed, b->lat[SIDE_RAW].failed);
    for (unsigned ci = 0; ci < b->client_counts; ci++) {
        const struct throughput *tp = b->tp[ci];
        double rc = rate_of(&tp[SIDE_CLEARING]), rr = rate_of(&tp[SIDE_RAW]);
        printf("BENCH api op=throughput clearing_execs_per_s=%.1f raw_execs_per_s=%.1f ratio=%.2f "
               "clients=%u clearing_s=%.1f raw_s=%.1f clearing_execs=%lu raw_execs=%lu "
               "clearing_failed=%lu raw_failed=%lu\n",
               rc, rr, bench_ratio(rc, rr), b->clients[ci], tp[SIDE_CLEARING].seconds,
               tp[SIDE_RAW].seconds, tp[SIDE_CLEARING].execs, tp[SIDE_RAW].execs,
               tp[SIDE_CLEARING].failed, tp[SIDE_RAW].failed);
    }
    const struct footprint *f = &b->fp;
    const double host = b->host_mem_kib;
    printf("BENCH api op=footprint rss_0_kib=%.0f rss_%u_kib=%.0f rss_%u_after_load_kib=%.0f "
           "peak_rss_kib=%.0f idle_cpu_0_pct=%.2f idle_cpu_%u_pct=%.2f idle_s=%u "
           "rss_%u_host_pct=%.4f\n",
           f->rss_kib[RSS_EMPTY], b->nsandboxes, f->rss_kib[RSS_IDLE], b->nsandboxes,
           f->rss_kib[RSS_AFTER_LOAD], f->peak_rss_kib, f->idle_cpu_pct[IDLE_EMPTY],
           b->nsandboxes, f->idle_cpu_pct[IDLE_SANDBOXES], b->idle_s, b->nsandboxes,
           f->rss_kib[RSS_IDLE] / host * 100.0);
    const struct sandbox_memory *mc = &b->mem[SIDE_CLEARING], *mr = &b->mem[SIDE_RAW];
    double pss_c = per_sandbox(mc, mc->pss_kib), pss_r = per_sandbox(mr, mr->pss_kib);
    printf("BENCH api op=memory sandboxes=%u clearing_pss_kib=%.0f clearing_rss_kib=%.0f "
           "raw_pss_kib=%.0f raw_rss_kib=%.0f clearing_processes=%u raw_processes=%u "
           "host_kib=%.0f clearing_idle_fit=%.0f raw_idle_fit=%.0f\n",
           mc->sandboxes, pss_c, per_sandbox(mc, mc->rss_kib), pss_r,
           per_sandbox(mr, mr->rss_kib), mc->processes, mr->processes, host, floor(host / pss_c),
           floor(host / pss_r));
}

void print_table(struct bench *b, unsigned left_behind)
{
    print_header(b, left_behind);
    print_latency(b);
    print_throughput(b);
    print_footprint(b);
    print_memory(b);
    print_bench_lines(b);
}

static json_t *kib_json(double v)
{
    return isnan(v) ? json_null() : json_integer((json_int_t)v);
}

static json_t *latency_json(const struct bench *b)
{
    json_t *lat = json_object();
    double p50[SIDE_COUNT];
    for (int sd = 0; sd < SIDE_COUNT; sd++) {
        const struct bench_series *s = &b->lat[sd];
        json_t *samples = json_array();
        for (size_t i = 0; i < s->n; i++)
            json_array_append_new(samples, bench_num_json(s->v[i], 1000));
        p50[sd] = bench_percentile(s, 50);
        json_t *o = json_pack("{s:o, s:o, s:o, s:I, s:i, s:o}", "p50_ms",
                              bench_num_json(p50[sd], 1000), "p95_ms",
                              bench_num_json(bench_percentile(s, 95), 1000), "p99_ms",
                              bench_num_json(bench_percentile(s, 99), 1000), "n",
                              (json_int_t)s->n, "failed", (int)s->failed, "samples_ms", samples);
        json_object_set_new(lat, side_keys[sd], o);
    }
    json_object_set_new(lat, "ratio_p50",
                        bench_num_json(bench_ratio(p50[SIDE_CLEARING], p50[SIDE_RAW]), 1000));
    return lat;
}

/* Every client count's throughput, in the order measured. */
static json_t *throughput_json(const struct bench *b)
{
    json_t *tp_all = json_array();
    for (unsigned ci = 0; ci < b->client_counts; ci++) {
        json_t *tp = json_object();
        double rate[SIDE_COUNT];
        for (int sd = 0; sd < SIDE_COUNT; sd++) {
            const struct throughput *t = &b->tp[ci][sd];
            json_t *slices = json_array();
            for (unsigned i = 0; i < t->slices; i++)
                json_array_append_new(slices, bench_num_json(t->slice_rate[i], 1000));
            rate[sd] = rate_of(t);
            json_object_set_new(tp, side_keys[sd],
                                json_pack("{s:o, s:I, s:I, s:o, s:o}", "execs_per_s",
                                          bench_num_json(rate[sd], 1000), "execs",
                                          (json_int_t)t->execs, "failed", (json_int_t)t->failed,
                                          "seconds", bench_num_json(t->seconds, 1000),
                                          "slices_execs_per_s", slices));
        }
        json_object_set_new(tp, "ratio",
                            bench_num_json(bench_ratio(rate[SIDE_CLEARING], rate[SIDE_RAW]), 1000));
        json_object_set_new(tp, "clients", json_integer(b->clients[ci]));
        json_array_append_new(tp_all, tp);
    }
    return tp_all;
}

/* The daemon's RSS (rss) and idle CPU (cpu), keyed by how many sandboxes it had. */
static void footprint_json(const struct bench *b, json_t **rss, json_t **cpu)
{
    char rss_keys[RSS_COUNT][40], idle_keys[IDLE_COUNT][40];
    snprintf(rss_keys[RSS_EMPTY], sizeof(rss_keys[0]), "sandboxes_0");
    snprintf(rss_keys[RSS_IDLE], sizeof(rss_keys[0]), "sandboxes_%u", b->nsandboxes);
    snprintf(rss_keys[RSS_AFTER_LOAD], sizeof(rss_keys[0]), "sandboxes_%u_after_load",
             b->nsandboxes);
    snprintf(idle_keys[IDLE_EMPTY], sizeof(idle_keys[0]), "sandboxes_0");
    snprintf(idle_keys[IDLE_SANDBOXES], sizeof(idle_keys[0]), "sandboxes_%u", b->nsandboxes);
    *rss = json_object();
    *cpu = json_object();
    for (int i = 0; i < RSS_COUNT; i++)
        json_object_set_new(*rss, rss_keys[i], kib_json(b->fp.rss_kib[i]));
    json_object_set_new(*rss, "peak", kib_json(b->fp.peak_rss_kib));
    for (int i = 0; i < IDLE_COUNT; i++)
        json_object_set_new(*cpu, idle_keys[i], bench_num_json(b->fp.idle_cpu_pct[i], 1000));
}

static json_t *memory_json(const struct bench *b)
{
    json_t *mem = json_object();
    for (int sd = 0; sd < SIDE_COUNT; sd++) {
        const struct sandbox_memory *m = &b->mem[sd];
        json_object_set_new(mem, side_keys[sd],
                            json_pack("{s:i, s:i, s:o, s:o}", "sandboxes", (int)m->sandboxes,
                                      "processes", (int)m->processes, "pss_kib",
                                      kib_json(m->processes ? m->pss_kib : NAN), "rss_kib",
                                      kib_json(m->processes ? m->rss_kib : NAN)));
    }
    json_object_set_new(mem, "host_mem_total_kib", kib_json(b->host_mem_kib));
    return mem;
}

void print_json(struct bench *b, unsigned left_behind)
{
    json_t *lat = latency_json(b);
    /* "throughput" is the first client count's (8 by default), as before there was a list;
     * "throughput_by_clients" has every count's. */
    json_t *tp_all = throughput_json(b);
    json_t *tp = json_incref(json_array_get(tp_all, 0));
    json_t *rss, *cpu;
    footprint_json(b, &rss, &cpu);
    json_t *mem = memory_json(b);

    json_t *j = json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:i, s:i, s:i, s:i, s:i, s:b, s:s, s:{s:o}, s:o, "
        "s:{s:o, s:o, s:i}}",
        "benchmark", "api", "daemon_version", b->daemon_version, "image", CLR_DEFAULT_IMAGE,
        "runtime", "runsc", "engine_api", clr_engine_api_version(b->eng), "rounds",
        (int)b->rounds_done, "clients", (int)b->clients[0], "duration_s", (int)b->duration_s,
        "slices_per_side", (int)b->slices_per_side, "left_behind", (int)left_behind,
        "interrupted", bench_interrupted ? 1 : 0, "percentile_method", "nearest-rank",
        "latency", "exec", lat, "throughput", tp, "footprint", "rss_kib", rss, "idle_cpu_pct",
        cpu, "idle_s", (int)b->idle_s);
    if (j) {
        json_object_set_new(j, "throughput_by_clients", tp_all);
        json_object_set_new(j, "sandbox_memory", mem);
    } else {
        json_decref(tp_all);
        json_decref(mem);
    }
    bench_print_json(j);
}
