/* Placeholder entry point; replaced by the command line module. */
#include "mailpull/common.h"

int
main(void)
{
	return 0;
}
