//! Atomic CSV writer for training logs.
//!
//! Examples record metrics per step or epoch in CSV so runs can be compared and plotted
//! later. Rows are written to a temporary file next to the destination, and only
//! [`CsvWriter::finish`] renames it into place, so a reader never sees a half-written file and
//! an interrupted run never overwrites a good log with a truncated one. Fields are quoted
//! following RFC 4180 when they need it. A long job whose every finished row must survive an
//! interruption (the `norm_scaling` study) appends row by row with [`append_row`] instead
//! and reads its file back with [`read_records`].

use std::borrow::Cow;
use std::fmt::Display;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Quotes a CSV field if it contains a comma, a double quote, or a line break (doubling any
/// quotes inside), as RFC 4180 requires; other fields are returned unchanged.
pub fn escape_field(field: &str) -> Cow<'_, str> {
    if field.contains([',', '"', '\n', '\r']) {
        Cow::Owned(format!("\"{}\"", field.replace('"', "\"\"")))
    } else {
        Cow::Borrowed(field)
    }
}

/// Writes a CSV file with a header row, atomically (see the module documentation).
///
/// Dropping the writer without calling [`finish`](Self::finish) discards the temporary file
/// and leaves any existing file at the destination untouched.
#[derive(Debug)]
pub struct CsvWriter {
    path: PathBuf,
    tmp: PathBuf,
    out: Option<BufWriter<File>>,
    columns: usize,
    rows: usize,
}

impl CsvWriter {
    /// Starts a CSV file destined for `path` with the given column names. Missing parent
    /// folders are created. Fails if `header` is empty.
    pub fn create(path: impl AsRef<Path>, header: &[&str]) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if header.is_empty() {
            return Err(Error::invalid("a CSV header needs at least one column"));
        }
        let file_name = path
            .file_name()
            .ok_or_else(|| Error::invalid(format!("{} is not a file path", path.display())))?;
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        let tmp = parent.join(format!(".{}.tmp-{}", file_name.to_string_lossy(), std::process::id()));
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let mut writer = CsvWriter {
            path,
            tmp,
            out: Some(BufWriter::new(file)),
            columns: header.len(),
            rows: 0,
        };
        writer.write_line(header.iter().map(|h| escape_field(h).into_owned()))?;
        Ok(writer)
    }

    fn write_line(&mut self, fields: impl Iterator<Item = String>) -> Result<()> {
        let line = fields.collect::<Vec<_>>().join(",");
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| Error::invalid("CSV writer already finished"))?;
        writeln!(out, "{line}").map_err(|e| Error::io(&self.tmp, e))
    }

    /// Appends one row. Each field is formatted with `Display` (floats therefore keep full
    /// precision) and quoted if needed. Fails if the number of fields differs from the header.
    pub fn write_row<I, T>(&mut self, fields: I) -> Result<()>
    where
        I: IntoIterator<Item = T>,
        T: Display,
    {
        let fields: Vec<String> = fields
            .into_iter()
            .map(|f| escape_field(&f.to_string()).into_owned())
            .collect();
        if fields.len() != self.columns {
            return Err(Error::invalid(format!(
                "CSV row has {} fields but the header has {}",
                fields.len(),
                self.columns
            )));
        }
        self.write_line(fields.into_iter())?;
        self.rows += 1;
        Ok(())
    }

    /// Number of data rows written so far (the header excluded).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The destination path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes and syncs the temporary file and renames it to the destination, replacing any
    /// file already there. Returns the destination path.
    pub fn finish(mut self) -> Result<PathBuf> {
        let out = self
            .out
            .take()
            .ok_or_else(|| Error::invalid("CSV writer already finished"))?;
        let file = out.into_inner().map_err(|e| Error::io(&self.tmp, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&self.tmp, e))?;
        drop(file);
        std::fs::rename(&self.tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        Ok(self.path.clone())
    }
}

impl Drop for CsvWriter {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            // Not finished: discard the partial file. Errors cannot be reported from drop.
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Splits one CSV line into fields, undoing [`escape_field`]'s quoting (RFC 4180; a quoted
/// field may not span lines here, which no writer in this crate produces).
pub fn split_line(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (false, '"') if cur.is_empty() => quoted = true,
            (false, ',') => fields.push(std::mem::take(&mut cur)),
            (_, c) => cur.push(c),
        }
    }
    fields.push(cur);
    fields
}

/// Appends one row to the CSV file at `path`, run by run: a long job (the `norm_scaling`
/// study) keeps every finished run even when it is interrupted, which the atomic
/// [`CsvWriter`] does not. A missing or empty file is started with `header`; an existing
/// one must have exactly that header. The line is flushed and synced before returning.
pub fn append_row(path: impl AsRef<Path>, header: &[&str], fields: &[String]) -> Result<()> {
    let path = path.as_ref();
    if fields.len() != header.len() {
        return Err(Error::invalid(format!(
            "CSV row has {} fields but the header has {}",
            fields.len(),
            header.len()
        )));
    }
    let head: Vec<String> = header.iter().map(|h| escape_field(h).into_owned()).collect();
    let existing = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut text = String::new();
    match existing.lines().next() {
        None => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            }
            text.push_str(&head.join(","));
            text.push('\n');
        }
        Some(first) if first == head.join(",") => {
            if !existing.ends_with('\n') {
                text.push('\n');
            }
        }
        Some(first) => {
            return Err(Error::invalid(format!(
                "{}: header `{first}` differs from `{}`; use another file",
                path.display(),
                head.join(",")
            )))
        }
    }
    let row: Vec<String> = fields.iter().map(|f| escape_field(f).into_owned()).collect();
    text.push_str(&row.join(","));
    text.push('\n');
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    file.write_all(text.as_bytes()).map_err(|e| Error::io(path, e))?;
    file.sync_all().map_err(|e| Error::io(path, e))
}

/// The data rows of the CSV file at `path` as `column name → value` maps (empty when the
/// file does not exist), for reading back what [`append_row`] wrote.
pub fn read_records(path: impl AsRef<Path>) -> Result<Vec<std::collections::BTreeMap<String, String>>> {
    let path = path.as_ref();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut lines = text.lines().filter(|l| !l.is_empty());
    let Some(head) = lines.next() else {
        return Ok(Vec::new());
    };
    let head = split_line(head);
    lines
        .enumerate()
        .map(|(i, l)| {
            let f = split_line(l);
            if f.len() != head.len() {
                return Err(Error::invalid(format!(
                    "{}: row {} has {} fields but the header has {}",
                    path.display(),
                    i + 1,
                    f.len(),
                    head.len()
                )));
            }
            Ok(head.iter().cloned().zip(f).collect())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("unigrad-csv-{tag}-{}", std::process::id()))
    }

    #[test]
    fn escaping() {
        assert_eq!(escape_field("plain"), "plain");
        assert_eq!(escape_field("a,b"), "\"a,b\"");
        assert_eq!(escape_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(escape_field("two\nlines"), "\"two\nlines\"");
    }

    #[test]
    fn writes_atomically_on_finish() {
        let dir = temp_dir("ok");
        let path = dir.join("nested").join("log.csv");
        let mut w = CsvWriter::create(&path, &["step", "loss", "note"]).unwrap();
        w.write_row([&1 as &dyn Display, &0.5f64, &"a,b"]).unwrap();
        w.write_row(["2", "0.25", "x"]).unwrap();
        assert!(w.write_row(["too", "few"]).is_err());
        assert_eq!(w.rows(), 2);
        assert!(!path.exists(), "nothing visible before finish");
        assert_eq!(w.finish().unwrap(), path);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "step,loss,note\n1,0.5,\"a,b\"\n2,0.25,x\n");
        // Only the final file is left in the folder.
        let entries = std::fs::read_dir(path.parent().unwrap()).unwrap().count();
        assert_eq!(entries, 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dropping_keeps_old_file() {
        let dir = temp_dir("drop");
        let path = dir.join("log.csv");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&path, "old\n").unwrap();
        {
            let mut w = CsvWriter::create(&path, &["a"]).unwrap();
            w.write_row([1]).unwrap();
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old\n");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        assert!(CsvWriter::create(&path, &[]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn appends_and_reads_back() {
        let dir = temp_dir("append");
        let path = dir.join("runs.csv");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(read_records(&path).unwrap().is_empty());
        append_row(&path, &["a", "b"], &["1".into(), "x,\"y\"".into()]).unwrap();
        append_row(&path, &["a", "b"], &["2".into(), "".into()]).unwrap();
        assert!(append_row(&path, &["a"], &["3".into()]).is_err(), "header mismatch");
        assert!(append_row(&path, &["a", "b"], &["3".into()]).is_err(), "too few fields");
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "a,b\n1,\"x,\"\"y\"\"\"\n2,\n");
        let rows = read_records(&path).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["b"], "x,\"y\"");
        assert_eq!(rows[1]["a"], "2");
        assert_eq!(rows[1]["b"], "");
        std::fs::write(&path, "a,b\n1\n").unwrap();
        assert!(read_records(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
