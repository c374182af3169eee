<?php
/**
 * Forge Example theme. The release label comes from version.txt next to
 * this file, so each build can say which release it is and health checks can
 * prove the new code is what PHP serves.
 */

function forge_example_release(): string
{
    $label = @file_get_contents(__DIR__ . '/version.txt');
    return $label === false ? 'unknown' : trim($label);
}

add_action('after_setup_theme', function (): void {
    add_theme_support('title-tag');
});

add_action('wp_enqueue_scripts', function (): void {
    wp_enqueue_style('forge-example', get_stylesheet_uri(), [], forge_example_release());
});

// The release also travels as a header, for checks that do not parse HTML.
add_action('send_headers', function (): void {
    header('X-Forge-Release: ' . rawurlencode(forge_example_release()));
});
