/* The C header alone compiles as strict C99 with -Wall -Wextra -Wpedantic -Werror. */
#include "edgellm.h"

int main(void) {
    edgellm_runtime_params params = edgellm_runtime_default_params();
    edgellm_sampling_params sampling = edgellm_sampling_default_params();
    return (params.struct_size == sizeof params && sampling.struct_size == sizeof sampling) ? 0 : 1;
}
