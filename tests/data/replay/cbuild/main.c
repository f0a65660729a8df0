#include <stdio.h>
double work1(int), work2(int), work3(int), work4(int), work5(int), work6(int);
int main(void) {
	printf("%f\n", work1(1000) + work2(2000) + work3(3000) + work4(4000) + work5(5000) + work6(6000));
	return 0;
}
