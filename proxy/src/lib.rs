//! mcm proxy crate. Today it ships the `mcm` command-line tool (`src/bin/mcm`); the media
//! proxy and mesh agent binaries join it here.
