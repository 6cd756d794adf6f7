/* The library's tests: exit status 0 only when every check holds. The last line,
 * "N passed, M failed", is the summary the gauntlet takes its figures from. */
#include <math.h>
#include <stdio.h>

#include "stats.h"

static int passes, failures;

#define CHECK_NEAR(got, want)                                                                  \
    do {                                                                                       \
        double g_ = (got), w_ = (want);                                                        \
        if (fabs(g_ - w_) > 1e-9) {                                                            \
            printf("FAIL %s:%d: %s is %g, expected %g\n", __FILE__, __LINE__, #got, g_, w_);   \
            failures++;                                                                        \
        } else {                                                                               \
            passes++;                                                                          \
        }                                                                                      \
    } while (0)

int main(void)
{
    const double odd[] = {3, 1, 2};
    const double even[] = {4, 1, 3, 2};
    double lo = 0, hi = 0;

    CHECK_NEAR(stats_mean(odd, 3), 2.0);
    CHECK_NEAR(stats_mean(even, 4), 2.5);
    CHECK_NEAR(stats_mean(odd, 0), 0.0);
    CHECK_NEAR(stats_median(odd, 3), 2.0);
    CHECK_NEAR(stats_median(even, 4), 2.5);
    CHECK_NEAR(stats_median(even, 0), 0.0);
    if (stats_range(even, 4, &lo, &hi) != 0) {
        printf("FAIL stats_range of 4 values\n");
        failures++;
    } else {
        passes++;
    }
    CHECK_NEAR(lo, 1.0);
    CHECK_NEAR(hi, 4.0);
    if (stats_range(even, 0, &lo, &hi) != -1) {
        printf("FAIL stats_range of no values must be -1\n");
        failures++;
    } else {
        passes++;
    }
    printf("%d passed, %d failed\n", passes, failures);
    return failures ? 1 : 0;
}
