<?php
/**
 * A small .env reader for sites without Composer packages.
 *
 * Bedrock normally uses vlucas/phpdotenv. This covers the subset forge writes
 * and people write by hand: KEY=value lines, `#` comments, an optional
 * `export ` prefix, 'single quotes' (literal) and "double quotes" (with \n,
 * \t, \", \\ and \$ escapes). Values stay on one line. As with phpdotenv's
 * immutable loader, a variable already set in the real environment wins.
 */

function forge_parse_dotenv(string $text): array
{
    $values = [];
    foreach (preg_split('/\r\n|\n|\r/', $text) as $index => $line) {
        $line = trim($line);
        if ($line === '' || $line[0] === '#') {
            continue;
        }
        if (strncmp($line, 'export ', 7) === 0) {
            $line = ltrim(substr($line, 7));
        }
        if (!preg_match('/^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$/', $line, $match)) {
            throw new RuntimeException(sprintf('.env line %d is not KEY=value', $index + 1));
        }
        $values[$match[1]] = forge_dotenv_value($match[2], $index + 1);
    }
    return $values;
}

function forge_dotenv_value(string $raw, int $line): string
{
    if ($raw === '') {
        return '';
    }
    $quote = $raw[0];
    if ($quote !== '"' && $quote !== "'") {
        // Unquoted: a ` #` starts a comment, like in a shell.
        $comment = strpos($raw, ' #');
        return rtrim($comment === false ? $raw : substr($raw, 0, $comment));
    }
    $end = forge_dotenv_closing_quote($raw, $quote);
    if ($end === null) {
        throw new RuntimeException(sprintf('.env line %d: unterminated %s quote', $line, $quote));
    }
    $inner = substr($raw, 1, $end - 1);
    if ($quote === "'") {
        return $inner;
    }
    return strtr($inner, ['\\\\' => '\\', '\\"' => '"', '\\n' => "\n", '\\r' => "\r", '\\t' => "\t", '\\$' => '$']);
}

function forge_dotenv_closing_quote(string $raw, string $quote): ?int
{
    for ($i = 1, $n = strlen($raw); $i < $n; $i++) {
        if ($quote === '"' && $raw[$i] === '\\') {
            $i++;
            continue;
        }
        if ($raw[$i] === $quote) {
            return $i;
        }
    }
    return null;
}

function forge_load_dotenv(string $path): void
{
    if (!is_file($path)) {
        return;
    }
    $text = file_get_contents($path);
    if ($text === false) {
        throw new RuntimeException(sprintf('cannot read %s (check its owner and mode)', $path));
    }
    foreach (forge_parse_dotenv($text) as $name => $value) {
        if (forge_env($name) !== null) {
            continue;
        }
        $_ENV[$name] = $value;
        $_SERVER[$name] = $value;
    }
}

/** A setting from the real environment or .env; $default when absent. */
function forge_env(string $name, ?string $default = null): ?string
{
    if (array_key_exists($name, $_ENV)) {
        return (string) $_ENV[$name];
    }
    if (array_key_exists($name, $_SERVER) && is_string($_SERVER[$name])) {
        return $_SERVER[$name];
    }
    $value = getenv($name);
    return $value === false ? $default : $value;
}

/** A boolean setting: true/1/yes/on and false/0/no/off/empty, any case. */
function forge_env_bool(string $name, bool $default): bool
{
    $value = forge_env($name);
    if ($value === null) {
        return $default;
    }
    return in_array(strtolower(trim($value)), ['1', 'true', 'yes', 'on'], true);
}
