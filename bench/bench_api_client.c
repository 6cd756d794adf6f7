/* clearing-bench-api's client of the daemon's REST API: libcurl over its unix socket, one handle
 * (and so one reused connection) per client. See bench_api.h. */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "bench_api.h"

#define API_TIMEOUT_MS 60000
#define API_MAX_ANSWER (16u * 1024 * 1024)
#define EXEC_REQUEST "{\"argv\":[\"true\"]}"

static size_t api_on_data(char *p, size_t size, size_t n, void *ud)
{
    struct api *a = ud;
    size_t len = size * n;
    if (a->len + len + 1 > API_MAX_ANSWER) {
        a->overflow = true;
        return 0;
    }
    if (a->len + len + 1 > a->cap) {
        size_t cap = a->cap ? a->cap : 4096;
        while (cap < a->len + len + 1)
            cap *= 2;
        char *d = realloc(a->buf, cap);
        if (!d)
            return 0;
        a->buf = d;
        a->cap = cap;
    }
    memcpy(a->buf + a->len, p, len);
    a->len += len;
    a->buf[a->len] = '\0';
    return len;
}

void api_close(struct api *a)
{
    if (a->curl)
        curl_easy_cleanup(a->curl);
    curl_slist_free_all(a->headers);
    free(a->buf);
    *a = (struct api){0};
}

int api_open(struct api *a, const char *socket_path, char *why, size_t why_len)
{
    *a = (struct api){0};
    a->curl = curl_easy_init();
    a->headers = curl_slist_append(NULL, "Content-Type: application/json");
    struct curl_slist *h = a->headers ? curl_slist_append(a->headers, "Expect:") : NULL;
    if (!a->curl || !h) {
        api_close(a);
        snprintf(why, why_len, "out of memory");
        return -1;
    }
    a->headers = h;
    curl_easy_setopt(a->curl, CURLOPT_UNIX_SOCKET_PATH, socket_path);
    curl_easy_setopt(a->curl, CURLOPT_HTTPHEADER, a->headers);
    curl_easy_setopt(a->curl, CURLOPT_WRITEFUNCTION, api_on_data);
    curl_easy_setopt(a->curl, CURLOPT_WRITEDATA, a);
    curl_easy_setopt(a->curl, CURLOPT_ERRORBUFFER, a->curl_err);
    curl_easy_setopt(a->curl, CURLOPT_TIMEOUT_MS, (long)API_TIMEOUT_MS);
    /* Threads: no SIGALRM-based name resolution timeouts. */
    curl_easy_setopt(a->curl, CURLOPT_NOSIGNAL, 1L);
    return 0;
}

/* One call: POST with body when body is not NULL, else method (GET or DELETE) without one.
 * Returns the HTTP status with the answer in a->buf (NUL-terminated, possibly empty), or -1
 * with why filled when the daemon could not be reached. */
int api_call(struct api *a, const char *method, const char *path, const char *body,
                    char *why, size_t why_len)
{
    char url[256];
    snprintf(url, sizeof(url), "http://clearing%s", path);
    a->len = 0;
    a->overflow = false;
    a->curl_err[0] = '\0';
    if (a->buf)
        a->buf[0] = '\0';
    curl_easy_setopt(a->curl, CURLOPT_URL, url);
    if (body) {
        curl_easy_setopt(a->curl, CURLOPT_CUSTOMREQUEST, NULL);
        curl_easy_setopt(a->curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(a->curl, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    } else {
        curl_easy_setopt(a->curl, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(a->curl, CURLOPT_CUSTOMREQUEST,
                         strcmp(method, "GET") == 0 ? NULL : method);
    }
    CURLcode rc = curl_easy_perform(a->curl);
    if (rc != CURLE_OK) {
        snprintf(why, why_len, "%s %s: %s", method, path,
                 a->overflow     ? "the answer is too large"
                 : a->curl_err[0] ? a->curl_err
                                  : curl_easy_strerror(rc));
        return -1;
    }
    long status = 0;
    curl_easy_getinfo(a->curl, CURLINFO_RESPONSE_CODE, &status);
    return (int)status;
}

const char *api_answer(const struct api *a)
{
    return a->buf ? a->buf : "";
}

/* For an unexpected status: the daemon's error message, or the start of its answer. */
void api_unexpected(const struct api *a, const char *method, const char *path, int status,
                           char *why, size_t why_len)
{
    json_t *j = json_loads(api_answer(a), 0, NULL);
    const char *msg = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    snprintf(why, why_len, "%s %s answered %d: %.512s", method, path, status,
             msg ? msg : api_answer(a));
    json_decref(j);
}

/* Runs `true` in the sandbox. t_ms (if not NULL) receives the time of the call alone; checking
 * the exec record comes after it. Fills why on failure. */
int api_exec_true(struct api *a, const char *sandbox, double *t_ms, char *why,
                         size_t why_len)
{
    char path[128];
    snprintf(path, sizeof(path), "/v1/sandboxes/%s/exec", sandbox);
    double t0 = bench_now_ms();
    int st = api_call(a, "POST", path, EXEC_REQUEST, why, why_len);
    double t1 = bench_now_ms();
    if (st < 0)
        return -1;
    if (st != 200) {
        api_unexpected(a, "POST", path, st, why, why_len);
        return -1;
    }
    json_t *j = json_loads(api_answer(a), 0, NULL);
    json_t *res = json_object_get(j, "result");
    const char *status = json_string_value(json_object_get(res, "status"));
    json_t *code = json_object_get(res, "exit_code");
    int rc = 0;
    if (!status || strcmp(status, "exited") != 0 || !json_is_integer(code) ||
        json_integer_value(code) != 0) {
        const char *msg = json_string_value(json_object_get(res, "message"));
        snprintf(why, why_len, "`true` ended %s, exit code %" JSON_INTEGER_FORMAT "%s%.512s",
                 status ? status : "(no result)",
                 json_is_integer(code) ? json_integer_value(code) : (json_int_t)-1,
                 msg ? ": " : "", msg ? msg : "");
        rc = -1;
    }
    json_decref(j);
    if (rc == 0 && t_ms)
        *t_ms = t1 - t0;
    return rc;
}
