/* stats: reads numbers (one per line) from stdin and prints their count, mean and median. */
#include <stdio.h>
#include <stdlib.h>

#include "stats.h"

int main(void)
{
    double *values = NULL;
    size_t n = 0, cap = 0;
    char line[256];
    while (fgets(line, sizeof(line), stdin)) {
        char *end;
        double v = strtod(line, &end);
        if (end == line)
            continue;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            double *grown = realloc(values, ncap * sizeof(*grown));
            if (!grown) {
                free(values);
                fputs("stats: out of memory\n", stderr);
                return 1;
            }
            values = grown;
            cap = ncap;
        }
        values[n++] = v;
    }
    printf("n=%zu mean=%g median=%g\n", n, stats_mean(values, n), stats_median(values, n));
    free(values);
    return 0;
}
