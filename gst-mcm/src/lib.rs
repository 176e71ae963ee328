// SPDX-License-Identifier: Apache-2.0
#![allow(clippy::non_send_fields_in_send_ty, unused_doc_comments)]

//! GStreamer plugin `mcm`: `mcmsink` publishes a stream into the mcm mesh, `mcmsrc`
//! subscribes to one. On one host the frames travel through shared-memory flows (MXL v1
//! layout); the elements reach them through the local media proxy (a multipoint group `urn`)
//! or directly (`domain` + `flow-id`, also for flows written by MXL tools).

/**
 * plugin-mcm:
 *
 * Since: plugins-rs-0.1.0
 */
use gst::glib;

mod common;
mod grainpool;
mod leasemem;
mod mcmsink;
mod mcmsrc;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    mcmsink::register(plugin)?;
    mcmsrc::register(plugin)?;
    Ok(())
}

gst::plugin_define!(
    mcm,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MIT/X11",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    "https://example.invalid/mcm",
    env!("BUILD_REL_DATE")
);
