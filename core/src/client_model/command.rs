//! What a person types, read as a command. Slash commands in the habit of irssi and weechat;
//! anything else is said to everyone. No protocol keyword ever needs typing: each command is
//! turned into its wire line by the model ([`super::ClientModel`]), and the protocol's own
//! keywords typed out of habit (`show`, `get_list_file`, `download_file x`, `{quit}`) are taken
//! as the command they stand for, because the server would read them so anyway (PROTOCOL 1.2).

/// One command, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Text for everyone.
    Say(String),
    /// `/msg NAME text` or `~NAME text`: a private message.
    Msg {
        /// The recipient.
        to: String,
        /// The message.
        text: String,
    },
    /// `/who`: who is here.
    Who,
    /// `/files`: the files on offer.
    Files,
    /// `/get FILE`: download a file.
    Get(String),
    /// `/quit`: leave.
    Quit,
    /// `/help [command]`.
    Help(Option<String>),
    /// `/reconnect`: try the server again now.
    Reconnect,
    /// `/clear`: empty the conversation view.
    Clear,
    /// Nothing to do (an empty line).
    Nothing,
}

/// Why typed text is not a command; the message is for the person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// A slash command this client does not know.
    #[error("unknown command /{0}: /help lists the commands")]
    Unknown(String),
    /// A known command with the wrong arguments.
    #[error("usage: {0}")]
    Usage(&'static str),
}

/// A command's name, its arguments and what it does: the source of `/help` and of completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandHelp {
    /// The name, without the slash.
    pub name: &'static str,
    /// Other names for it.
    pub aliases: &'static [&'static str],
    /// How to call it.
    pub usage: &'static str,
    /// What it does.
    pub about: &'static str,
}

/// Every command, in the order `/help` lists them.
pub const COMMANDS: &[CommandHelp] = &[
    CommandHelp {
        name: "msg",
        aliases: &["m", "query"],
        usage: "/msg NAME text   (or ~NAME text)",
        about: "say something to one person only",
    },
    CommandHelp { name: "who", aliases: &["names"], usage: "/who", about: "who is here" },
    CommandHelp {
        name: "files",
        aliases: &["ls"],
        usage: "/files",
        about: "the files you can download",
    },
    CommandHelp {
        name: "get",
        aliases: &["download", "dl"],
        usage: "/get FILE",
        about: "download a file into your download folder, checked byte for byte",
    },
    CommandHelp {
        name: "help",
        aliases: &["h", "?"],
        usage: "/help [command]",
        about: "this list, or more about one command",
    },
    CommandHelp {
        name: "reconnect",
        aliases: &["connect"],
        usage: "/reconnect",
        about: "try the server again now after a lost connection",
    },
    CommandHelp { name: "clear", aliases: &[], usage: "/clear", about: "empty this window" },
    CommandHelp { name: "quit", aliases: &["exit", "q"], usage: "/quit", about: "leave" },
];

/// The command called `name` (or one of its aliases), ignoring case.
pub fn find_command(name: &str) -> Option<&'static CommandHelp> {
    COMMANDS.iter().find(|c| {
        c.name.eq_ignore_ascii_case(name) || c.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
    })
}

impl Command {
    /// Reads one typed line (without its terminator).
    pub fn parse(typed: &str) -> Result<Command, CommandError> {
        let text = typed.trim_end_matches(['\r', '\n']);
        if text.trim().is_empty() {
            return Ok(Command::Nothing);
        }
        if let Some(escaped) = text.strip_prefix("//") {
            // irssi's escape: `//text` says `/text`.
            return Ok(Command::Say(format!("/{escaped}")));
        }
        if let Some(slash) = text.strip_prefix('/') {
            return parse_slash(slash);
        }
        if let Some(rest) = text.strip_prefix('~') {
            return private(rest, "~NAME text");
        }
        Ok(match text {
            // The protocol's keywords, typed out of habit: the server would run them, not say
            // them, so they are run here too.
            "show" => Command::Who,
            "get_list_file" | "get list file" => Command::Files,
            "{quit}" => Command::Quit,
            _ if text == "download_file" || text.starts_with("download_file ") => {
                let file = text["download_file".len()..].split_whitespace().next();
                match file {
                    Some(file) => Command::Get(file.to_owned()),
                    None => return Err(CommandError::Usage("/get FILE")),
                }
            }
            _ => Command::Say(text.to_owned()),
        })
    }
}

fn parse_slash(slash: &str) -> Result<Command, CommandError> {
    let (word, args) = match slash.split_once(' ') {
        Some((word, args)) => (word, args.trim()),
        None => (slash, ""),
    };
    let Some(command) = find_command(word) else {
        return Err(CommandError::Unknown(word.to_owned()));
    };
    let no_args =
        |c: Command| if args.is_empty() { Ok(c) } else { Err(CommandError::Usage(command.usage)) };
    match command.name {
        "msg" => private(args, command.usage),
        "who" => no_args(Command::Who),
        "files" => no_args(Command::Files),
        "get" => match args.split_whitespace().collect::<Vec<_>>().as_slice() {
            [file] => Ok(Command::Get((*file).to_owned())),
            _ => Err(CommandError::Usage(command.usage)),
        },
        "help" => Ok(Command::Help(
            args.split_whitespace().next().map(|c| c.trim_start_matches('/').to_owned()),
        )),
        "reconnect" => no_args(Command::Reconnect),
        "clear" => no_args(Command::Clear),
        _ => no_args(Command::Quit),
    }
}

/// `NAME text` after `/msg` or `~`.
fn private(rest: &str, usage: &'static str) -> Result<Command, CommandError> {
    let rest = rest.trim_start();
    match rest.split_once(' ') {
        Some((to, text)) if !to.is_empty() && !text.trim().is_empty() => {
            Ok(Command::Msg { to: to.to_owned(), text: text.to_owned() })
        }
        _ => Err(CommandError::Usage(usage)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Command {
        match Command::parse(text) {
            Ok(command) => command,
            Err(err) => panic!("{text:?}: {err}"),
        }
    }

    // Issue 13 (commands); PROTOCOL 1.2
    #[test]
    fn plain_text_is_said_to_everyone() {
        assert_eq!(parse("hello all"), Command::Say("hello all".into()));
        assert_eq!(parse("//help is this"), Command::Say("/help is this".into()));
        assert_eq!(parse("   "), Command::Nothing);
    }

    // Issue 13 (commands); PROTOCOL 1.2
    #[test]
    fn every_command_and_its_aliases() {
        assert_eq!(
            parse("/msg bob hi there"),
            Command::Msg { to: "bob".into(), text: "hi there".into() }
        );
        assert_eq!(parse("/m bob hi"), Command::Msg { to: "bob".into(), text: "hi".into() });
        assert_eq!(parse("~bob hi"), Command::Msg { to: "bob".into(), text: "hi".into() });
        assert_eq!(parse("/who"), Command::Who);
        assert_eq!(parse("/NAMES"), Command::Who);
        assert_eq!(parse("/files"), Command::Files);
        assert_eq!(parse("/get hello.c"), Command::Get("hello.c".into()));
        assert_eq!(parse("/dl  hello.c "), Command::Get("hello.c".into()));
        assert_eq!(parse("/quit"), Command::Quit);
        assert_eq!(parse("/exit"), Command::Quit);
        assert_eq!(parse("/help"), Command::Help(None));
        assert_eq!(parse("/help /get"), Command::Help(Some("get".into())));
        assert_eq!(parse("/reconnect"), Command::Reconnect);
        assert_eq!(parse("/clear"), Command::Clear);
    }

    // Issue 13 (no protocol keyword needed); PROTOCOL 1.2
    #[test]
    fn protocol_keywords_run_the_command_they_stand_for() {
        assert_eq!(parse("show"), Command::Who);
        assert_eq!(parse("get_list_file"), Command::Files);
        assert_eq!(parse("get list file"), Command::Files);
        assert_eq!(parse("{quit}"), Command::Quit);
        assert_eq!(parse("download_file a.txt 1200"), Command::Get("a.txt".into()));
    }

    // Issue 13 (commands)
    #[test]
    fn mistakes_are_explained() {
        assert_eq!(Command::parse("/frobnicate"), Err(CommandError::Unknown("frobnicate".into())));
        assert!(matches!(Command::parse("/msg bob"), Err(CommandError::Usage(_))));
        assert!(matches!(Command::parse("~bob"), Err(CommandError::Usage(_))));
        assert!(matches!(Command::parse("/get"), Err(CommandError::Usage(_))));
        assert!(matches!(Command::parse("/get a b"), Err(CommandError::Usage(_))));
        assert!(matches!(Command::parse("/who me"), Err(CommandError::Usage(_))));
        assert!(matches!(Command::parse("download_file"), Err(CommandError::Usage(_))));
        let err = Command::parse("/nope").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("/help"), "{err}");
    }
}
