#include "../tornado.h"
#include "tn_test.h"

TEST(loop_new_free) {
    tn_loop *l = NULL;
    REQUIRE(tn_loop_new(&l, NULL) == 0);
    CHECK(l != NULL);
    tn_loop_free(l);
}
