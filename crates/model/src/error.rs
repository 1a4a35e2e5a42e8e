use std::fmt;

/// A rejected input: which field, and what is allowed there. An input checked whole
/// (a manifest) carries every other field it found wrong in `more`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
    pub more: Vec<FieldError>,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
            more: Vec::new(),
        }
    }

    /// This error and the ones it carries, each alone.
    pub fn all(self) -> Vec<FieldError> {
        let mut all = vec![FieldError {
            more: Vec::new(),
            ..self.clone()
        }];
        all.extend(self.more.into_iter().flat_map(FieldError::all));
        all
    }

    /// The same error with every field's path under `prefix`.
    pub fn under(self, prefix: &str) -> FieldError {
        FieldError {
            field: format!("{prefix}{}", self.field),
            message: self.message,
            more: self.more.into_iter().map(|e| e.under(prefix)).collect(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)?;
        for other in &self.more {
            write!(f, "\n{other}")?;
        }
        Ok(())
    }
}

impl std::error::Error for FieldError {}

/// Collects every invalid field of one input instead of stopping at the first, so
/// the user fixes a document in one round.
#[derive(Debug, Default)]
pub struct Problems(Vec<FieldError>);

impl Problems {
    /// The value when `checked` holds; otherwise its errors are kept and `None`.
    pub fn check<T>(&mut self, checked: Result<T, FieldError>) -> Option<T> {
        match checked {
            Ok(value) => Some(value),
            Err(e) => {
                self.0.extend(e.all());
                None
            }
        }
    }

    pub fn push(&mut self, error: FieldError) {
        self.0.extend(error.all());
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok` of what `value` makes when nothing was wrong; every error found otherwise.
    pub fn finish<T>(self, value: impl FnOnce() -> T) -> Result<T, FieldError> {
        let mut errors = self.0.into_iter();
        match errors.next() {
            None => Ok(value()),
            Some(first) => Err(FieldError {
                more: errors.collect(),
                ..first
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_keep_every_error_in_order_and_nothing_when_all_is_well() {
        let mut problems = Problems::default();
        assert_eq!(problems.check(Ok::<_, FieldError>(1)), Some(1));
        assert_eq!(problems.check::<u8>(Err(FieldError::new("a", "bad"))), None);
        problems.push(FieldError {
            more: vec![FieldError::new("c", "worse")],
            ..FieldError::new("b", "also bad")
        });
        let e = problems.finish(|| ()).unwrap_err();
        let fields: Vec<String> = e.clone().all().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["a", "b", "c"]);
        assert_eq!(e.to_string(), "a: bad\nb: also bad\nc: worse");
        assert_eq!(Problems::default().finish(|| 7), Ok(7));
    }
}
