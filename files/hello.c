/* hello.c: a tiny program to download from natter and compile. */
#include <stdio.h>

int main(int argc, char **argv)
{
    const char *who = argc > 1 ? argv[1] : "world";
    printf("hello, %s, from a file that came over natter\n", who);
    return 0;
}
