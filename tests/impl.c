/* The one translation unit of the suite that compiles the implementation;
 * every tests/test_*.c includes only the declarations, as a user's would. */
#define TORNADO_IMPLEMENTATION
#include "../tornado.h"
