#include "stats.h"

#include <stdlib.h>
#include <string.h>

double stats_mean(const double *values, size_t n)
{
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += values[i];
    return n ? sum / (double)n : 0;
}

static int compare(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double stats_median(const double *values, size_t n)
{
    if (n == 0)
        return 0;
    double *sorted = malloc(n * sizeof(*sorted));
    if (!sorted)
        return 0;
    memcpy(sorted, values, n * sizeof(*sorted));
    qsort(sorted, n, sizeof(*sorted), compare);
    double m = n % 2 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
    free(sorted);
    return m;
}

int stats_range(const double *values, size_t n, double *min, double *max)
{
    if (n == 0)
        return -1;
    *min = *max = values[0];
    for (size_t i = 1; i < n; i++) {
        if (values[i] < *min)
            *min = values[i];
        if (values[i] > *max)
            *max = values[i];
    }
    return 0;
}
