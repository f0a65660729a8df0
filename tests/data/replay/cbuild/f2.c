#include <stdio.h>
#include <string.h>
#include <stdlib.h>
struct item2 { int key; double value; char name[32]; };
static int cmp2(const void *a, const void *b) {
	const struct item2 *x = a, *y = b;
	return (x->key > y->key) - (x->key < y->key);
}
double work2(int n) {
	struct item2 *v = calloc(n, sizeof *v);
	double s = 0;
	for (int k = 0; k < n; k++) { v[k].key = (k * 7919) % n; v[k].value = k * 0.5; snprintf(v[k].name, sizeof v[k].name, "item-%d", k); }
	qsort(v, n, sizeof *v, cmp2);
	for (int k = 0; k < n; k++) s += v[k].value / (1 + strlen(v[k].name));
	free(v);
	return s;
}
