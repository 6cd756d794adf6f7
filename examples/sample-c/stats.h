/* Summary statistics of a list of numbers: the kind of small library an agent edits. */
#ifndef STATS_H
#define STATS_H

#include <stddef.h>

/* The arithmetic mean of values[0..n-1]; 0 when n is 0. */
double stats_mean(const double *values, size_t n);

/* The median of values[0..n-1] (sorts a copy); 0 when n is 0 or memory runs out. */
double stats_median(const double *values, size_t n);

/* The smallest and largest value; returns -1 when n is 0. */
int stats_range(const double *values, size_t n, double *min, double *max);

#endif
