//! A package's own files: `updraft.yaml`, `Procfile` and `package.json`, as the command
//! detection reads them. The input is split into the three files at NUL bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use updraft_model::package::{detect, PackageFiles};

struct Files<'a>([Option<&'a str>; 3]);

const NAMES: [&str; 3] = ["updraft.yaml", "Procfile", "package.json"];

impl PackageFiles for Files<'_> {
    fn root_files(&self) -> Vec<String> {
        NAMES
            .iter()
            .zip(self.0)
            .filter(|(_, text)| text.is_some())
            .map(|(name, _)| name.to_string())
            .collect()
    }

    fn read(&self, name: &str) -> Option<String> {
        let i = NAMES.iter().position(|n| *n == name)?;
        self.0[i].map(str::to_string)
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\0');
    let files = Files([parts.next(), parts.next(), parts.next()]);
    let _ = detect(&files);
});
