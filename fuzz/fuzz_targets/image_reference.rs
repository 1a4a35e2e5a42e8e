//! OCI image references as templates and `--image` name them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use updraft_model::image_ref::validate_image_reference;

fuzz_target!(|text: &str| {
    let _ = validate_image_reference("image", text);
});
